"""The arms of the experiment: each one a run of the same traffic under one set of conditions.

Named arms:
  feedback              honest users send +1 / -1 only
  feedback+corrections  ... and, with probability --correction-rate, the right label on a -1
  supervised            every traffic text's gold label as a correction (the oracle for the same texts)
  ignore-negatives      like feedback, but -1 signals are never sent
  signed                like feedback, trained with the literal signed loss f·CE(shown)
  robust                like feedback, trained with the robust loss (−1 -> p, bounded in [0, 1])
  lora                  like feedback, fine-tuning LoRA adapters instead of the full encoder
  active, random        active-B and random-B with B = --correction-budget
Swept arms (any value in [0, 1]):
  lambda-X              feedback+corrections with λ = X in  L = λ·L_data + (1−λ)·L_feedback
  noise-X               feedback with a fraction X of signals flipped
  adversarial-X         feedback with a share X of the traffic sent by one client that flips every signal
                        (a hostile client)
  careless-X            feedback with a share X of the traffic sent by one client that answers at random
  trusted-X             the baseline conditions, and a share X of the traffic sent by a key an admin marked
                        trusted, which labels every text it sees (use with --noise: noisy users and a QA team)
  mixture               10% of signals flipped, and 10% of the traffic each from a careless and an
                        adversarial client
  active-X              feedback, and the right label on exactly the answers the server marks
                        feedback_wanted (the task's policy.feedback_budget = X caps their share)
  random-X              feedback, and the right label on a seeded random share X of the traffic
                        (policy.feedback_budget 0: the server asks for nothing)

`--noise`, `--adversarial-share`, `--lambda` and `--feedback-loss` set the conditions of every
arm that does not set its own.
Arms whose conditions come out identical (e.g. noise-0 and feedback) are run once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from app.core.policy import DEFAULT_FEEDBACK_LOSS, FEEDBACK_LOSSES
from app.tools.simulate.users import Behaviour

LOSSES = FEEDBACK_LOSSES
SIM_EPOCHS = 2  # the product's default is 3; two keep a many-round sweep affordable on 2 cores
DEFAULT_ARMS = (
    "feedback", "feedback+corrections", "supervised", "ignore-negatives", "signed", "robust", "lora",
    "lambda-0.25", "lambda-0.5", "lambda-0.75", "noise-0", "noise-0.1", "noise-0.3", "adversarial-0.1",
)
QUICK_ARMS = ("feedback", "feedback+corrections", "supervised", "ignore-negatives", "signed")
NAMED = ("feedback", "feedback+corrections", "supervised", "ignore-negatives", "signed", "robust", "lora", "active",
         "random", "mixture")
SWEPT = re.compile(r"^(lambda|noise|adversarial|careless|trusted|active|random)-(\d+(?:\.\d+)?)$")
DEFAULT_CORRECTION_BUDGET = 0.05  # X of the plain `active` and `random` arms


@dataclass(frozen=True)
class Conditions:
    """Everything an arm's outcome depends on, apart from the shared traffic and options."""

    behaviour: Behaviour
    adversarial_share: float = 0.0
    careless_share: float = 0.0  # of the traffic, from a client answering at random
    trusted_share: float = 0.0  # of the traffic, from a trusted key that labels what it sees
    lambda_data: float = 0.5
    feedback_loss: str = DEFAULT_FEEDBACK_LOSS  # one of FEEDBACK_LOSSES
    finetune: str = "full"  # full | lora
    feedback_budget: float = 0.0  # the task's policy.feedback_budget: share of answers the server may ask about


@dataclass(frozen=True)
class Arm:
    name: str
    conditions: Conditions

    def describe(self) -> str:
        c, b = self.conditions, self.conditions.behaviour
        if b.oracle:
            signals = "gold label of every text as a correction"
        else:
            signals = "+1 / -1" if b.send_negatives else "+1 only (-1 dropped)"
            if b.correction_rate:
                signals += f", right label on {b.correction_rate:.0%} of -1"
            if b.label_when_asked:
                signals += f", right label on the answers marked feedback_wanted (budget {c.feedback_budget:g})"
            if b.label_share:
                signals += f", right label on a random {b.label_share:.0%} of the traffic"
        parts = [signals, f"λ={c.lambda_data:g}", f"{c.feedback_loss} loss", f"{c.finetune} fine-tuning"]
        if b.noise:
            parts.append(f"{b.noise:.0%} of signals flipped")
        if c.adversarial_share:
            parts.append(f"{c.adversarial_share:.0%} of traffic from an adversarial client")
        if c.careless_share:
            parts.append(f"{c.careless_share:.0%} of traffic from a careless client")
        if c.trusted_share:
            parts.append(f"{c.trusted_share:.0%} of traffic from a trusted key labelling it")
        return "; ".join(parts)


def _unit(name: str, value: str | float) -> float:
    x = float(value)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"arm {name!r}: the value must be in [0, 1]")
    return x


def make_arm(name: str, *, correction_rate: float, noise: float, adversarial_share: float,
             lambda_data: float, feedback_loss: str = DEFAULT_FEEDBACK_LOSS,
             correction_budget: float = DEFAULT_CORRECTION_BUDGET) -> Arm:
    """The arm called `name`, on top of the baseline conditions given by the options
    (`correction_budget`: X of the plain `active` and `random` arms)."""
    if feedback_loss not in LOSSES:
        raise ValueError(f"feedback loss must be one of {', '.join(LOSSES)}, got {feedback_loss!r}")
    base = Conditions(Behaviour(noise=noise), adversarial_share=adversarial_share, lambda_data=lambda_data,
                      feedback_loss=feedback_loss)
    corrections = replace(base, behaviour=replace(base.behaviour, correction_rate=correction_rate))
    if name == "feedback":
        return Arm(name, base)
    if name == "feedback+corrections":
        return Arm(name, corrections)
    if name == "supervised":
        return Arm(name, replace(base, behaviour=replace(base.behaviour, oracle=True)))
    if name == "ignore-negatives":
        return Arm(name, replace(base, behaviour=replace(base.behaviour, send_negatives=False)))
    if name in ("signed", "robust"):
        return Arm(name, replace(base, feedback_loss=name))
    if name == "lora":
        return Arm(name, replace(base, finetune="lora"))
    if name == "mixture":
        return Arm(name, replace(base, behaviour=replace(base.behaviour, noise=0.1), careless_share=0.1,
                                 adversarial_share=0.1))
    m = SWEPT.match(name)
    if name in ("active", "random"):
        kind, x = name, _unit(f"{name} (--correction-budget)", correction_budget)
    elif m is None:
        known = ", ".join(NAMED + ("lambda-X", "noise-X", "adversarial-X", "careless-X", "trusted-X", "active-X",
                                   "random-X"))
        raise ValueError(f"unknown arm {name!r}; known: {known}")
    else:
        kind, x = m.group(1), _unit(name, m.group(2))
    if kind == "active":
        return Arm(name, replace(base, feedback_budget=x,
                                 behaviour=replace(base.behaviour, label_when_asked=True)))
    if kind == "random":
        return Arm(name, replace(base, behaviour=replace(base.behaviour, label_share=x)))
    if kind == "lambda":
        return Arm(name, replace(corrections, lambda_data=x))
    if kind == "noise":
        return Arm(name, replace(base, behaviour=replace(base.behaviour, noise=x)))
    if x >= 1.0:
        raise ValueError(f"arm {name!r}: the share must be below 1")
    if kind == "careless":
        return Arm(name, replace(base, careless_share=x))
    if kind == "trusted":
        return Arm(name, replace(base, trusted_share=x))
    return Arm(name, replace(base, adversarial_share=x))


def parse_arms(spec: str | None, *, default: tuple[str, ...] = DEFAULT_ARMS, correction_rate: float, noise: float,
               adversarial_share: float, lambda_data: float, feedback_loss: str = DEFAULT_FEEDBACK_LOSS,
               correction_budget: float = DEFAULT_CORRECTION_BUDGET) -> list[Arm]:
    """`a,b,…` -> arms, in the order given, without repeats; None gives `default`, 'all' every
    default arm; the rest are the baseline conditions (see `make_arm`)."""
    if spec is None:
        names = list(default)
    elif spec == "all":
        names = list(DEFAULT_ARMS)
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError("--arms names no arm")
    return [make_arm(n, correction_rate=correction_rate, noise=noise, adversarial_share=adversarial_share,
                     lambda_data=lambda_data, feedback_loss=feedback_loss, correction_budget=correction_budget)
            for n in dict.fromkeys(names)]


def distinct(arms: list[Arm]) -> dict[str, str]:
    """For each arm, the first arm with identical conditions (itself if none came before)."""
    first: dict[Conditions, str] = {}
    return {a.name: first.setdefault(a.conditions, a.name) for a in arms}
