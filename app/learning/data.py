"""A task's training and validation data, read from the database.

Labelled examples, corrections (used as labels) and ±1 signals on the label that was shown,
with contradictions resolved, each client's share capped and a deterministic held-out
slice of feedback kept for the gate.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Example, Feedback, Prediction, Task
from app.learning.policy import Policy

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """One spelling per text: NFKC, case-folded, whitespace collapsed, ends trimmed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hash(text: str) -> str:
    """sha256 hex of the normalised text: the identity of a text across examples and feedback."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def split_for(text: str, validation_fraction: float = 0.2) -> str:
    """'train' or 'validation', fixed by the text's hash, so a text never sits on both sides."""
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1], got {validation_fraction}")
    bucket = int(text_hash(text)[:8], 16) / 0x1_0000_0000  # uniform in [0, 1)
    return "validation" if bucket < validation_fraction else "train"


# ---------------------------------------------------------------- what the trainer and gate get


@dataclass(frozen=True)
class Item:
    """One training or validation row.

    signal 0: a labelled row (example or correction), `label` is the right class.
    signal ±1: feedback on the class that was shown, `label` is that shown class.
    """

    text: str
    label: int
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


# ---------------------------------------------------------------- watermark: what a run has seen


def current_watermark(session: Session, task_id: int) -> dict[str, int]:
    """Highest feedback and example ids of the task now; a run reads nothing past them."""
    fb = session.scalar(select(func.max(Feedback.id)).where(Feedback.task_id == task_id))
    ex = session.scalar(select(func.max(Example.id)).where(Example.task_id == task_id))
    return {"feedback_id": int(fb or 0), "example_id": int(ex or 0)}


def new_signals_since(session: Session, task_id: int, watermark: Mapping[str, Any] | None) -> int:
    """Feedback rows plus examples that arrived after `watermark` (all of them for an empty one)."""
    wm = watermark or {}
    fb = session.scalar(
        select(func.count()).select_from(Feedback)
        .where(Feedback.task_id == task_id, Feedback.id > int(wm.get("feedback_id", 0)))
    )
    ex = session.scalar(
        select(func.count()).select_from(Example)
        .where(Example.task_id == task_id, Example.id > int(wm.get("example_id", 0)))
    )
    return int(fb or 0) + int(ex or 0)


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


def build_dataset(session: Session, *, task: Task, policy: Policy | None = None) -> TaskDataset:
    """Examples, corrections and ±1 signals of `task`, resolved, capped and split.

    Examples keep the split stored when they were uploaded; feedback is split by the same hash
    of its normalised text, so a text sits on one side only.
    """
    policy = policy or Policy.from_dict(task.policy)
    labels = [str(lab) for lab in task.labels]
    index = {lab: i for i, lab in enumerate(labels)}
    watermark = current_watermark(session, task.id)
    counts = {"examples": 0, "corrections": 0, "positive": 0, "negative": 0,
              "conflicts_dropped": 0, "unknown_label_dropped": 0, "clients": 0, "capped_clients": 0}
    train: list[Item] = []
    validation: list[Item] = []

    examples = session.execute(
        select(Example.text, Example.label, Example.split)
        .where(Example.task_id == task.id, Example.id <= watermark["example_id"])
        .order_by(Example.id)
    )
    for text, label, split in examples:
        if label not in index:
            counts["unknown_label_dropped"] += 1
            continue
        (validation if split == "validation" else train).append(Item(text, index[label]))
        counts["examples"] += 1

    # Each client's latest word on each text is its one vote there.
    latest: dict[tuple[str, int | None], Vote] = {}
    rows = session.execute(
        select(Feedback.id, Feedback.client_id, Feedback.signal, Feedback.correction, Prediction.text, Prediction.label)
        .join(Prediction, Prediction.id == Feedback.prediction_id)
        .where(Feedback.task_id == task.id, Feedback.id <= watermark["feedback_id"])
        .order_by(Feedback.id)
    )
    for fid, client, signal, correction, text, shown in rows:
        if correction is not None:
            vote = Vote("is", correction, fid, client, text, "correction")
        elif signal > 0:
            vote = Vote("is", shown, fid, client, text, "feedback")
        else:
            vote = Vote("not", shown, fid, client, text, "feedback")
        if vote.label not in index:
            counts["unknown_label_dropped"] += 1
            continue
        latest[(text_hash(text), client)] = vote

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
            item = Item(vote.text, index[vote.label], 0, w, "correction", vote.client)
            counts["corrections"] += 1
        else:
            signal = 1 if vote.claim == "is" else -1
            item = Item(vote.text, index[vote.label], signal, w, "feedback", vote.client)
            counts["positive" if signal > 0 else "negative"] += 1
        side = split_for(vote.text, policy.feedback_validation_fraction)
        (validation if side == "validation" else train).append(item)

    counts["train"] = len(train)
    counts["validation"] = len(validation)
    return TaskDataset(labels=labels, train=train, validation=validation, counts=counts, watermark=watermark)
