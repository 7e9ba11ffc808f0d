"""The SQL that gathers what a task's training run reads: its examples, its feedback (with
the prediction each signal is about), and the watermark a run stops at.

Plain rows come out; `app/learning/dataset.py` turns them into a dataset without touching
the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.tables import Example, Feedback, Prediction


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
    span: int | None = None  # the signal is about this part of the answer (a tagging span), not all of it


@dataclass(frozen=True)
class TrainingRows:
    examples: list[ExampleRow]
    feedback: list[FeedbackRow]
    watermark: dict[str, int]


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


def load_training_rows(session: Session, task_id: int) -> TrainingRows:
    """Every example and feedback row of the task up to the current watermark, oldest first."""
    watermark = current_watermark(session, task_id)
    examples = [
        ExampleRow(text, label, split)
        for text, label, split in session.execute(
            select(Example.text, Example.label, Example.split)
            .where(Example.task_id == task_id, Example.id <= watermark["example_id"])
            .order_by(Example.id)
        )
    ]
    feedback = [
        FeedbackRow(fid, client, signal, correction, text, shown, _propensity(scores, shown), span)
        for fid, client, signal, correction, text, shown, scores, span in session.execute(
            select(Feedback.id, Feedback.client_id, Feedback.signal, Feedback.correction, Prediction.text,
                   Prediction.label, Prediction.scores, Feedback.span)
            .join(Prediction, Prediction.id == Feedback.prediction_id)
            .where(Feedback.task_id == task_id, Feedback.id <= watermark["feedback_id"])
            .order_by(Feedback.id)
        )
    ]
    return TrainingRows(examples=examples, feedback=feedback, watermark=watermark)


def _propensity(scores: Any, shown: str) -> float | None:
    value = scores.get(shown) if isinstance(scores, dict) else None
    return float(value) if isinstance(value, (int, float)) else None
