"""The SQL that gathers what a task's training run reads: its examples, its feedback (with
the prediction each signal is about), and the watermark a run stops at.

Plain rows come out; `app/learning/dataset.py` turns them into a dataset without touching
the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.tables import Client, Example, Feedback, Prediction


@dataclass(frozen=True)
class ExampleRow:
    text: str
    label: str
    split: str  # train | validation, fixed at upload


@dataclass(frozen=True)
class FeedbackRow:
    id: int  # later ids are newer
    client_id: int | None
    signal: int  # +1 | -1
    correction: str | None
    text: str  # the text of the prediction the signal is about
    shown: str  # the label that prediction showed
    propensity: float | None = None  # the probability the model gave the shown label then
    span: int | None = None  # the signal is about this part of the answer (one span of a set), not all of it


@dataclass(frozen=True)
class TrainingRows:
    examples: list[ExampleRow]
    feedback: list[FeedbackRow]
    watermark: dict[str, int]
    left_out: dict[str, int] = field(default_factory=lambda: {"examples": 0, "feedback": 0})  # the oldest, over the cap


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


def shares(counts: Mapping[str, int], max_rows: int | None) -> dict[str, int]:
    """How many rows of each kind to read: all of them within `max_rows`, else `max_rows` split
    in proportion to the counts (so neither the examples nor the feedback crowd the other out)."""
    total = sum(counts.values())
    if max_rows is None or total <= max_rows:
        return dict(counts)
    names = list(counts)
    out = {name: counts[name] * max_rows // total for name in names[:-1]}
    out[names[-1]] = max_rows - sum(out.values())
    return out


def load_training_rows(session: Session, task_id: int, *, max_rows: int | None = None) -> TrainingRows:
    """The task's example and feedback rows up to the current watermark, oldest first: all of
    them, or with `max_rows` at most that many together, the newest of each kind in proportion
    (`left_out` counts the rest).  Memory grows with `max_rows`, not with the task's history."""
    watermark = current_watermark(session, task_id)
    examples_q = Example.task_id == task_id, Example.id <= watermark["example_id"]
    feedback_q = Feedback.task_id == task_id, Feedback.id <= watermark["feedback_id"]
    counts = {"examples": int(session.scalar(select(func.count()).select_from(Example).where(*examples_q)) or 0),
              "feedback": int(session.scalar(select(func.count()).select_from(Feedback).where(*feedback_q)) or 0)}
    take = shares(counts, max_rows)
    newest_examples = session.execute(
        select(Example.text, Example.label, Example.split).where(*examples_q)
        .order_by(Example.id.desc()).limit(take["examples"])
    ).all()
    examples = [ExampleRow(text, label, split) for text, label, split in reversed(newest_examples)]
    newest_feedback = session.execute(
        select(Feedback.id, Feedback.client_id, Feedback.signal, Feedback.correction, Prediction.text,
               Prediction.label, Prediction.scores, Feedback.span)
        .join(Prediction, Prediction.id == Feedback.prediction_id)
        .where(*feedback_q)
        .order_by(Feedback.id.desc()).limit(take["feedback"])
    ).all()
    feedback = [FeedbackRow(fid, client, signal, correction, text, shown, _propensity(scores, shown), span)
                for fid, client, signal, correction, text, shown, scores, span in reversed(newest_feedback)]
    return TrainingRows(examples=examples, feedback=feedback, watermark=watermark,
                        left_out={name: counts[name] - take[name] for name in counts})


def trusted_client_ids(session: Session) -> set[int]:
    """The keys an admin vouches for: their feedback is known truth to the noise model."""
    return set(session.scalars(select(Client.id).where(Client.trusted.is_(True))).all())


def _propensity(scores: Any, shown: str) -> float | None:
    value = scores.get(shown) if isinstance(scores, dict) else None
    return float(value) if isinstance(value, (int, float)) else None
