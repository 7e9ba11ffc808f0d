"""A task's training and validation data, built from plain rows (no database here).

Labelled examples, corrections (used as labels) and ±1 signals on the answer that was shown,
with contradictions resolved, each client's share capped and a deterministic held-out slice
of feedback kept for the gate.  `app/db/training_rows.py` gathers the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Protocol, Sequence

from app.core.policy import Policy
from app.core.texts import split_for, text_hash


# The rows are read, never written: read-only members, so frozen dataclasses (app/db/training_rows.py) fit.
class ExampleLike(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def split(self) -> str: ...


class FeedbackLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def client_id(self) -> int | None: ...
    @property
    def signal(self) -> int: ...
    @property
    def correction(self) -> str | None: ...
    @property
    def text(self) -> str: ...
    @property
    def shown(self) -> str: ...
    @property
    def propensity(self) -> float | None: ...


# ---------------------------------------------------------------- what the trainer and gate get


@dataclass(frozen=True)
class Item:
    """One training or validation row.

    signal 0: a labelled row (example or correction), `label` is the right answer's target.
    signal ±1: feedback on the answer that was shown, `label` is that shown answer's target.
    The target is whatever the task's kind trains on (a class index for one label per text).
    """

    text: str
    label: Any
    signal: int = 0
    weight: float = 1.0
    source: str = "example"  # example | correction | feedback
    client_id: int | None = None
    flip: float = 0.0  # signal ±1: the chance its client flips a signal (app/learning/noise.py)
    order: int = 0  # feedback and corrections: the feedback row's id (later rows are newer); examples 0


@dataclass
class TaskDataset:
    labels: list[str]
    train: list[Item]
    validation: list[Item]
    counts: dict[str, Any]  # rows of each kind used and left out (a run adds the noise report it trained under)
    watermark: dict[str, int]
    reliability: dict[str, dict[str, Any]] = field(default_factory=dict)  # per client id: evidence and weight


# ---------------------------------------------------------------- contradictions


@dataclass(frozen=True)
class Vote:
    """One client's latest word on one text: 'is' <label> (a +1 or a correction) or 'not' <label> (a −1)."""

    claim: str  # is | not
    label: str
    order: int  # feedback id: later ids are newer
    client: int | None
    text: str
    source: str  # feedback | correction
    propensity: float | None = None  # p(shown label) when the answer was given


Same = Callable[[str, str], bool]  # do two stored labels say the same (the task kind's `same`)


def _equal(a: str, b: str) -> bool:
    return a == b


def compatible(a: Vote, b: Vote, same: Same = _equal) -> bool:
    """Can both votes be true of the same text?"""
    if a.claim == b.claim == "is":
        return same(a.label, b.label)
    if a.claim == b.claim == "not":
        return True
    yes, no = (a, b) if a.claim == "is" else (b, a)
    return not same(yes.label, no.label)


def resolve(votes: Sequence[Vote], same: Same = _equal) -> tuple[list[Vote], int]:
    """Keep the votes consistent with the latest one, unless a strict majority disagrees with it;
    then keep those consistent with the best-supported vote (ties go to the newer).
    Returns (kept votes, number dropped)."""
    if not votes:
        return [], 0
    latest = max(votes, key=lambda v: v.order)
    agree = sum(compatible(v, latest, same) for v in votes)
    winner = latest
    if len(votes) - agree > agree:
        winner = max(votes, key=lambda v: (sum(compatible(u, v, same) for u in votes), v.order))
    kept = [v for v in votes if compatible(v, winner, same)]
    return kept, len(votes) - len(kept)


# ---------------------------------------------------------------- per-client cap


def client_weights(counts: Mapping[Any, int], cap: float) -> dict[Any, float]:
    """Per-row weight for each client so no client carries more than `cap` of the total weight.

    The largest clients are scaled down to a common mass m with m / (k·m + rest) = cap.  With n
    clients no share can sit below 1/n, so a smaller cap gives equal shares; with one client
    there is nothing to share against and its weight stays 1 (the gate still judges the result).
    """
    weights = {c: 1.0 for c in counts}
    n = len(counts)
    if n < 2 or cap >= 1.0:
        return weights
    cap = max(cap, 1.0 / n)
    order = sorted(counts, key=lambda c: (-counts[c], str(c)))
    if counts[order[0]] <= cap * sum(counts.values()):
        return weights
    for k in range(1, n):  # cap the k largest clients
        rest = sum(counts[c] for c in order[k:])
        mass = cap * rest / (1.0 - k * cap)
        if counts[order[k]] <= mass:
            for c in order[:k]:
                weights[c] = mass / counts[c]
            return weights
    return weights  # unreachable: k = n-1 always fits once cap >= 1/n


# ---------------------------------------------------------------- per-client reliability

MIN_AGREEMENT_EVIDENCE = 5  # comparisons with known labels / other clients before agreement counts
MIN_SIGNALS_PER_SIDE = 10  # +1s and −1s each before a client's propensity ranking counts
INFORMATIVE_POOL_AUC = 0.55  # the others' ranking must say something for a comparison to mean anything


@dataclass(frozen=True)
class Reliability:
    """How far one client's word is to be trusted, from the data, and why."""

    agree: int  # its votes consistent with a known label or with another client's vote on the text
    disagree: int
    auc: float | None  # P(p_shown of one of its +1s > that of one of its −1s)
    weight: float  # in [0, 1], multiplies its rows' weight

    def to_json(self) -> dict[str, Any]:
        return {"agree": self.agree, "disagree": self.disagree,
                "auc": None if self.auc is None else round(self.auc, 4), "weight": round(self.weight, 4)}


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a random positive > a random negative), ties counting half (Mann–Whitney)."""
    if not positives or not negatives:
        return None
    ranked = sorted([(v, 1) for v in positives] + [(v, 0) for v in negatives])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg = (i + j + 1) / 2.0
        rank_sum += avg * sum(flag for _, flag in ranked[i:j])
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def client_reliability(votes: Sequence[Vote], known: Mapping[str, str], same: Same = _equal
                       ) -> dict[int | None, Reliability]:
    """Per client, from three kinds of evidence in the data:

    - agreement with a known label of the same text (a labelled example, or a correction given
      by someone else): r = (agree + 1) / (agree + disagree + 2), weight factor 2r − 1;
    - agreement with the other clients' votes on the same text, counted the same way;
    - whether its +1s fall on answers the model was surer of than its −1s (the propensity
      logged with each prediction): its AUC against the pooled AUC of everyone else,
      factor (AUC − ½) / (AUC_others − ½), when the others' ranking is informative at all.
    A client with too little evidence of a kind keeps factor 1 for it: reliability lowers a
    weight only on evidence, never by default.  Votes are the latest per (text, client).
    """
    by_text: dict[str, list[Vote]] = {}
    for v in votes:
        by_text.setdefault(text_hash(v.text), []).append(v)
    agree: dict[int | None, int] = {}
    disagree: dict[int | None, int] = {}
    for key, group in by_text.items():
        gold = known.get(key)
        for v in group:
            checks = [compatible(v, o, same) for o in group if o.client != v.client]
            if gold is not None:
                checks.append(compatible(v, Vote("is", gold, 0, None, v.text, "example"), same))
            agree[v.client] = agree.get(v.client, 0) + sum(checks)
            disagree[v.client] = disagree.get(v.client, 0) + len(checks) - sum(checks)
    sides: dict[int | None, tuple[list[float], list[float]]] = {}
    for v in votes:
        if v.propensity is None:
            continue
        pos, neg = sides.setdefault(v.client, ([], []))
        # a +1 is an "is" on the shown label; a −1 (with or without a correction) refutes it
        (pos if v.claim == "is" and v.source == "feedback" else neg).append(v.propensity)
    out: dict[int | None, Reliability] = {}
    for client in {v.client for v in votes}:
        a, d = agree.get(client, 0), disagree.get(client, 0)
        factor = 1.0
        if a + d >= MIN_AGREEMENT_EVIDENCE:
            factor = max(0.0, 2.0 * (a + 1) / (a + d + 2) - 1.0)
        pos, neg = sides.get(client, ([], []))
        mine = auc(pos, neg) if len(pos) >= MIN_SIGNALS_PER_SIDE and len(neg) >= MIN_SIGNALS_PER_SIDE else None
        if mine is not None:
            others_pos = [p for c, (ps, _) in sides.items() if c != client for p in ps]
            others_neg = [n for c, (_, ns) in sides.items() if c != client for n in ns]
            pooled = auc(others_pos, others_neg)
            if pooled is not None and pooled >= INFORMATIVE_POOL_AUC:
                factor *= min(1.0, max(0.0, (mine - 0.5) / (pooled - 0.5)))
        out[client] = Reliability(a, d, mine, factor)
    return out


# ---------------------------------------------------------------- the dataset


def build_dataset(
    *,
    labels: Sequence[str],
    examples: Sequence[ExampleLike],
    feedback: Sequence[FeedbackLike],
    watermark: Mapping[str, int],
    policy: Policy,
    target: Callable[[str], Any] | None = None,
    holdout_salt: str = "",
    same: Same = _equal,
    flip_rates: Mapping[int | None, float] | None = None,
    excluded_clients: Collection[int | None] = (),
) -> TaskDataset:
    """Examples, corrections and ±1 signals, resolved, capped and split.

    Examples keep the split stored when they were uploaded; feedback is split by the same hash
    of its normalised text, so a text sits on one side only.  `target` turns a stored label
    into what the trainer learns (by default its index in `labels`); a label it refuses
    (KeyError/ValueError) is counted as dropped.  `holdout_salt` picks which slice of the
    feedback is held out: a run passes its own, so over runs every signal both trains and
    validates, but never in the same run.  `same` says when two labels agree (votes on a
    score on a scale agree when they are close, not only when equal).  `flip_rates`: each client's
    estimated flip rate (the noise model's), carried on its signals for the losses and the gate;
    `excluded_clients`: clients whose every word is left out (the noise model found them
    adversarial), counted in `excluded_rows`.
    """
    labels = [str(lab) for lab in labels]
    index = {lab: i for i, lab in enumerate(labels)}
    to_target = target or index.__getitem__
    counts = {"examples": 0, "corrections": 0, "positive": 0, "negative": 0,
              "conflicts_dropped": 0, "unknown_label_dropped": 0, "clients": 0, "capped_clients": 0,
              "excluded_clients": 0, "excluded_rows": 0}
    rates = flip_rates or {}
    train: list[Item] = []
    validation: list[Item] = []

    def target_or_none(label: str) -> Any:
        try:
            return to_target(label)
        except (KeyError, ValueError):
            counts["unknown_label_dropped"] += 1
            return None

    for ex in examples:
        t = target_or_none(ex.label)
        if t is None:
            continue
        (validation if ex.split == "validation" else train).append(Item(ex.text, t))
        counts["examples"] += 1

    # Each client's latest word on each text (on each part of its answer, for signals about one
    # part: one span of a set) is its one vote there.
    latest: dict[tuple[str, int | None, int | None], Vote] = {}
    excluded = set(excluded_clients)
    for fb in feedback:
        if fb.client_id in excluded:
            counts["excluded_rows"] += 1
            continue
        p = getattr(fb, "propensity", None)
        if fb.correction is not None:
            vote = Vote("is", fb.correction, fb.id, fb.client_id, fb.text, "correction", p)
        elif fb.signal > 0:
            vote = Vote("is", fb.shown, fb.id, fb.client_id, fb.text, "feedback", p)
        else:
            vote = Vote("not", fb.shown, fb.id, fb.client_id, fb.text, "feedback", p)
        if target_or_none(vote.label) is None:
            continue
        latest[(text_hash(fb.text), fb.client_id, getattr(fb, "span", None))] = vote

    by_text: dict[tuple[str, int | None], list[Vote]] = {}
    for (key, _client, part), vote in latest.items():
        by_text.setdefault((key, part), []).append(vote)
    kept: list[Vote] = []
    for text_part in sorted(by_text, key=lambda k: (k[0], -1 if k[1] is None else k[1])):
        votes, dropped = resolve(by_text[text_part], same)
        kept.extend(votes)
        counts["conflicts_dropped"] += dropped

    per_client: dict[int | None, int] = {}
    for vote in kept:
        per_client[vote.client] = per_client.get(vote.client, 0) + 1
    weights = client_weights(per_client, policy.max_client_share)
    counts["clients"] = len(per_client)
    counts["capped_clients"] = sum(w < 1.0 for w in weights.values())
    # Trust: every vote the client gave (before conflicts were resolved) is evidence about it.
    known = {text_hash(ex.text): ex.label for ex in examples}
    known.update({text_hash(v.text): v.label for v in latest.values() if v.source == "correction" and v.client is None})
    trust = client_reliability(list(latest.values()), known, same)
    for client in weights:
        weights[client] *= trust[client].weight if client in trust else 1.0
    counts["down_weighted_clients"] = sum(t.weight < 1.0 for t in trust.values())

    for vote in sorted(kept, key=lambda v: v.order):
        w = weights[vote.client]
        if vote.source == "correction":
            item = Item(vote.text, to_target(vote.label), 0, w, "correction", vote.client, order=vote.order)
            counts["corrections"] += 1
        else:
            signal = 1 if vote.claim == "is" else -1
            item = Item(vote.text, to_target(vote.label), signal, w, "feedback", vote.client,
                        min(0.5, max(0.0, float(rates.get(vote.client, 0.0)))), vote.order)
            counts["positive" if signal > 0 else "negative"] += 1
        side = split_for(vote.text, policy.feedback_validation_fraction, holdout_salt)
        (validation if side == "validation" else train).append(item)

    counts["excluded_clients"] = len(excluded & {fb.client_id for fb in feedback})
    counts["train"] = len(train)
    counts["validation"] = len(validation)
    return TaskDataset(labels=labels, train=train, validation=validation, counts=counts, watermark=dict(watermark),
                       reliability={str(c): t.to_json() for c, t in sorted(trust.items(), key=lambda kv: str(kv[0]))})
