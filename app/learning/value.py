"""What a label from the user is worth for one prediction: the task kind's `uncertainty` of its
answer (in [0, 1]) times a rarity boost for its label (in [1, 2)): 1 + max(0, 1 − (n + 1)/(mean + 1)),
n the label's labelled rows (examples plus corrections) and mean their mean over the task's labels.
A label with no labelled rows while the others have many nearly doubles the value; a task with
nothing labelled boosts nothing, and the +1s keep a handful of rows from swinging it.  Pure: the
predict path (`app/services/asking.py`) and the review queue (`app/services/review.py`) both ask it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.kinds import Answer, TaskKind

RARITY_WEIGHT = 1.0  # a label with no labelled rows (others have many) has its value × nearly (1 + this)


def rarity_boosts(labels: Sequence[str], counts: Mapping[str, int]) -> dict[str, float]:
    """Per label, 1 + RARITY_WEIGHT · max(0, 1 − (n + 1)/(mean + 1)), n its labelled rows
    (examples and corrections), mean over the task's labels; all 1.0 while nothing is labelled."""
    if not labels:
        return {}
    mean = sum(counts.get(lab, 0) for lab in labels) / len(labels)
    return {lab: 1.0 + RARITY_WEIGHT * max(0.0, 1.0 - (counts.get(lab, 0) + 1) / (mean + 1)) for lab in labels}


def value_of(kind: TaskKind, answer: Answer, boosts: Mapping[str, float]) -> tuple[float, float]:
    """(value, boost) of one answer: the kind's uncertainty times its label's rarity boost."""
    boost = boosts.get(answer.label, 1.0)
    u = min(1.0, max(0.0, float(kind.uncertainty(answer))))
    return u * boost, boost
