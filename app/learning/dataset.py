"""A task's training and validation data, built from plain rows (no database here).

Labelled examples, corrections (used as labels) and ±1 signals on the answer that was shown,
with contradictions resolved, each client's share capped and a deterministic held-out slice
of feedback kept for the gate.  `app/db/training_rows.py` gathers the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from app.policy import Policy
from app.texts import split_for, text_hash


class ExampleLike(Protocol):
    text: str
    label: str
    split: str


class FeedbackLike(Protocol):
    id: int
    client_id: int | None
    signal: int
    correction: str | None
    text: str
    shown: str


# ---------------------------------------------------------------- what the trainer and gate get


@dataclass(frozen=True)
class Item:
    """One training or validation row.

    signal 0: a labelled row (example or correction), `label` is the right answer's target.
    signal ±1: feedback on the answer that was shown, `label` is that shown answer's target.
    The target is whatever the task's kind trains on (a class index for classification).
    """

    text: str
    label: Any
    signal: int = 0
    weight: float = 1.0
    source: str = "example"  # example | correction | feedback
    client_id: int | None = None


@dataclass
class TaskDataset:
    labels: list[str]
    train: list[Item]
    validation: list[Item]
    counts: dict[str, int]
    watermark: dict[str, int]


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


def compatible(a: Vote, b: Vote) -> bool:
    """Can both votes be true of the same text?"""
    if a.claim == b.claim == "is":
        return a.label == b.label
    if a.claim == b.claim == "not":
        return True
    yes, no = (a, b) if a.claim == "is" else (b, a)
    return yes.label != no.label


def resolve(votes: Sequence[Vote]) -> tuple[list[Vote], int]:
    """Keep the votes consistent with the latest one, unless a strict majority disagrees with it;
    then keep those consistent with the best-supported vote (ties go to the newer).
    Returns (kept votes, number dropped)."""
    if not votes:
        return [], 0
    latest = max(votes, key=lambda v: v.order)
    agree = sum(compatible(v, latest) for v in votes)
    winner = latest
    if len(votes) - agree > agree:
        winner = max(votes, key=lambda v: (sum(compatible(u, v) for u in votes), v.order))
    kept = [v for v in votes if compatible(v, winner)]
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


# ---------------------------------------------------------------- the dataset


def build_dataset(
    *,
    labels: Sequence[str],
    examples: Sequence[ExampleLike],
    feedback: Sequence[FeedbackLike],
    watermark: Mapping[str, int],
    policy: Policy,
    target: Callable[[str], Any] | None = None,
) -> TaskDataset:
    """Examples, corrections and ±1 signals, resolved, capped and split.

    Examples keep the split stored when they were uploaded; feedback is split by the same hash
    of its normalised text, so a text sits on one side only.  `target` turns a stored label
    into what the trainer learns (by default its index in `labels`); a label it refuses
    (KeyError/ValueError) is counted as dropped.
    """
    labels = [str(lab) for lab in labels]
    index = {lab: i for i, lab in enumerate(labels)}
    to_target = target or index.__getitem__
    counts = {"examples": 0, "corrections": 0, "positive": 0, "negative": 0,
              "conflicts_dropped": 0, "unknown_label_dropped": 0, "clients": 0, "capped_clients": 0}
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

    # Each client's latest word on each text is its one vote there.
    latest: dict[tuple[str, int | None], Vote] = {}
    for fb in feedback:
        if fb.correction is not None:
            vote = Vote("is", fb.correction, fb.id, fb.client_id, fb.text, "correction")
        elif fb.signal > 0:
            vote = Vote("is", fb.shown, fb.id, fb.client_id, fb.text, "feedback")
        else:
            vote = Vote("not", fb.shown, fb.id, fb.client_id, fb.text, "feedback")
        if vote.label not in index:
            counts["unknown_label_dropped"] += 1
            continue
        latest[(text_hash(fb.text), fb.client_id)] = vote

    by_text: dict[str, list[Vote]] = {}
    for (key, _client), vote in latest.items():
        by_text.setdefault(key, []).append(vote)
    kept: list[Vote] = []
    for key in sorted(by_text):
        votes, dropped = resolve(by_text[key])
        kept.extend(votes)
        counts["conflicts_dropped"] += dropped

    per_client: dict[int | None, int] = {}
    for vote in kept:
        per_client[vote.client] = per_client.get(vote.client, 0) + 1
    weights = client_weights(per_client, policy.max_client_share)
    counts["clients"] = len(per_client)
    counts["capped_clients"] = sum(w < 1.0 for w in weights.values())

    for vote in sorted(kept, key=lambda v: v.order):
        w = weights[vote.client]
        if vote.source == "correction":
            item = Item(vote.text, to_target(vote.label), 0, w, "correction", vote.client)
            counts["corrections"] += 1
        else:
            signal = 1 if vote.claim == "is" else -1
            item = Item(vote.text, to_target(vote.label), signal, w, "feedback", vote.client)
            counts["positive" if signal > 0 else "negative"] += 1
        side = split_for(vote.text, policy.feedback_validation_fraction)
        (validation if side == "validation" else train).append(item)

    counts["train"] = len(train)
    counts["validation"] = len(validation)
    return TaskDataset(labels=labels, train=train, validation=validation, counts=counts, watermark=dict(watermark))
