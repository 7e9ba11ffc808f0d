"""What a simulated user says about one answer: +1, -1, a correction, or nothing.

An honest user compares the answer shown with the gold one (the task's kind judges whether it
is right): +1 if it is right, -1 if it is wrong, and with probability `correction_rate` a wrong
answer also gets the right one.  Where a kind's answers have parts, a wrong answer left
uncorrected gets a +1 or -1 on each part instead (`KindUser.judge_parts`).  The
oracle user (the `supervised` arm) gives every text its gold label as a correction.  Users who
label only when asked (the `active` arms) add the gold label to the +1 / -1 of exactly the
answers the server marked `feedback_wanted`; the `random` arms' users do so on a seeded random
share of the texts instead (`label_share`), whatever the server asked.  Noise
flips a signal: the user says the opposite of the truth.  Besides the honest users, a scenario
can have three other kinds of client, each sending its own share of the traffic: the
adversarial (hostile) client flips every signal it sends; the careless one answers at random
(each signal flipped on a coin toss); the trusted one (a key an admin marked trusted, an
internal QA team) never errs and labels every text it sees.

Every random draw for one text comes from a generator seeded by (seed, text index), so the
same text gets the same draws in every arm: arms differ in what they do, not in their luck.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # types only: importing the kinds loads torch, which `flywheel --help` need not
    from app.kinds import KindAnswers, KindUser


@dataclass(frozen=True)
class Behaviour:
    correction_rate: float = 0.0  # chance that a -1 carries the right label
    oracle: bool = False  # every answer gets the gold label as a correction (supervised)
    send_negatives: bool = True  # False: a -1 without a correction is never sent (ignore-negatives)
    noise: float = 0.0  # chance that one signal is flipped
    label_when_asked: bool = False  # the gold label as a correction on answers with feedback_wanted (active)
    label_share: float = 0.0  # the gold label as a correction on this share of the texts, at random (random)

    def __post_init__(self) -> None:
        for name in ("correction_rate", "noise", "label_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class Signal:
    """The body of one POST /v1/predictions/{id}/feedback."""

    signal: int  # +1 or -1
    correction: str | None = None  # the right answer, as the task stores it
    span: int | None = None  # the signal is about this part of the answer (for a kind whose answers have parts)

    def body(self, kind: KindAnswers) -> dict[str, object]:
        out: dict[str, object] = {"signal": self.signal}
        if self.correction is not None:
            out["correction"] = kind.answer_value(self.correction)  # as the API shows, and takes, an answer
        if self.span is not None:
            out["span"] = self.span
        return out


@dataclass(frozen=True)
class Draws:
    """The uniform draws one text gets, identical across arms."""

    noise: float
    correction: float
    pick: float  # chooses the wrong label a lie names
    label: float  # below `label_share`: this text gets its gold label (the random arms)
    coin: float  # below ½: a careless client flips this signal

    @classmethod
    def for_text(cls, seed: int, index: int) -> "Draws":
        rng = random.Random(f"flywheel-simulate:{seed}:{index}")
        # later fields are drawn after the earlier ones, so those are what they were before them
        return cls(rng.random(), rng.random(), rng.random(), rng.random(), rng.random())


def labels_it(behaviour: Behaviour, draws: Draws, wanted: bool) -> bool:
    """Whether the user adds the gold label to this answer's +1 / -1 whatever it says."""
    return (behaviour.oracle or (behaviour.label_when_asked and wanted)
            or draws.label < behaviour.label_share)


def truthful(shown: str, gold: str, behaviour: Behaviour, draws: Draws, kind: KindUser,
             wanted: bool = False, labels: Sequence[str] = ()) -> list[Signal]:
    """What a user who knows the gold answer and tells the truth says (the task kind judges
    whether the shown answer matches it, and what each part of a wrong one is worth).
    `wanted`: the server asked for feedback on it."""
    right = kind.is_right(labels, shown, gold)
    if labels_it(behaviour, draws, wanted):
        return [Signal(1 if right else -1, gold)]
    if right:
        return [Signal(1)]
    if draws.correction < behaviour.correction_rate:
        return [Signal(-1, gold)]
    return [Signal(s, span=i) for i, s in enumerate(kind.judge_parts(labels, shown, gold))] or [Signal(-1)]


def flip(sig: Signal, shown: str, labels: Sequence[str], draws: Draws, kind: KindUser) -> Signal:
    """The opposite of `sig`: a +1 becomes a -1 (a correction becomes a wrong label, where the
    task's labels are answers; else it is dropped); a -1 becomes a +1 (a correction becomes the
    shown, wrong, answer)."""
    if sig.signal > 0:
        if sig.correction is None or not kind.labels_are_answers:
            return Signal(-1, span=sig.span)
        others = [lab for lab in labels if lab != shown]
        return Signal(-1, others[int(draws.pick * len(others))])
    return Signal(1, shown if sig.correction is not None else None, sig.span)


# Who sends a text: an honest user 0, 1, … or one of these clients.
ADVERSARY, CARELESS, TRUSTED = -1, -2, -3
CLIENT_NAMES = {ADVERSARY: "adversary", CARELESS: "careless", TRUSTED: "trusted"}


def client_name(owner: int) -> str:
    return CLIENT_NAMES.get(owner, f"user-{owner}")


def flips(owner: int, behaviour: Behaviour, draws: Draws) -> bool:
    """Whether this client says the opposite of the truth about this text."""
    if owner == ADVERSARY:
        return True
    if owner == CARELESS:
        return draws.coin < 0.5
    if owner == TRUSTED:
        return False
    return draws.noise < behaviour.noise


def decide(
    shown: str, gold: str, *, behaviour: Behaviour, labels: Sequence[str], draws: Draws, kind: KindUser,
    owner: int = 0, wanted: bool = False,
) -> list[Signal]:
    """The signals client `owner` sends about one answer: none, one, or one per part of a wrong
    answer.  `wanted`: the answer came with `feedback_wanted: true`.  Noise and the adversary
    flip every signal."""
    if owner == TRUSTED:
        behaviour = Behaviour(oracle=True)
    sigs = truthful(shown, gold, behaviour, draws, kind, wanted, labels)
    if flips(owner, behaviour, draws):
        sigs = [flip(sig, shown, labels, draws, kind) for sig in sigs]
    if not behaviour.send_negatives:
        sigs = [sig for sig in sigs if not (sig.signal < 0 and sig.correction is None)]
    return sigs


def assign_clients(n: int, *, honest: int, adversarial_share: float, seed: int, careless_share: float = 0.0,
                   trusted_share: float = 0.0) -> list[int]:
    """Which client sends each of `n` traffic texts: 0..honest-1 are honest users (round robin);
    ADVERSARY, CARELESS and TRUSTED each get their share of the texts (exactly, rounded; seeded,
    disjoint)."""
    if honest < 1:
        raise ValueError("need at least one honest user")
    shares = {ADVERSARY: adversarial_share, CARELESS: careless_share, TRUSTED: trusted_share}
    for who, share in shares.items():
        if not 0.0 <= share < 1.0:
            raise ValueError(f"the {CLIENT_NAMES[who]} share must be in [0, 1), got {share}")
    if sum(shares.values()) >= 1.0:
        raise ValueError("the adversarial, careless and trusted shares leave no traffic to honest users")
    owners = [i % honest for i in range(n)]
    rng = random.Random(f"flywheel-adversary:{seed}")  # the adversary's texts are what they were before the others
    free = list(range(n))
    for who, share in shares.items():
        picked = rng.sample(free, round(n * share))
        for i in picked:
            owners[i] = who
        taken = set(picked)
        free = [i for i in free if i not in taken]
    return owners
