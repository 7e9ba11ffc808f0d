"""Recording a signal about one prediction: a small transaction and no model work."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.deps import Caller
from app.api.problems import Problem, invalid
from app.db.models import Feedback, Prediction, Task


def record_feedback(
    session: Session,
    *,
    prediction_id: str,
    caller: Caller,
    signal: int,
    correction: str | None,
    user_hash: str | None,
) -> Feedback:
    row = session.execute(
        select(Prediction.task_id, Prediction.client_id, Prediction.label, Task.labels)
        .join(Task, Task.id == Prediction.task_id)
        .where(Prediction.id == prediction_id)
    ).one_or_none()
    if row is None:
        raise Problem(404, "unknown-prediction", "Unknown prediction", f"No prediction with id {prediction_id!r}.",
                      field="prediction_id")
    task_id, owner, shown, labels = row
    if not caller.is_admin and owner != caller.client_id:
        raise Problem(403, "not-your-prediction", "Forbidden",
                      "This prediction was made for another client; feedback is only taken on your own.",
                      field="prediction_id")
    if correction is not None:
        if correction not in labels:
            raise invalid("correction", f"{correction!r} is not a label of this task.", slug="unknown-label")
        if signal == -1 and correction == shown:
            raise invalid("correction", f"signal -1 says {shown!r} was wrong, but the correction repeats it.",
                          slug="contradictory-feedback")
        if signal == 1 and correction != shown:
            raise invalid("correction", f"signal 1 says {shown!r} was right, but the correction says {correction!r}.",
                          slug="contradictory-feedback")
    fb = Feedback(prediction_id=prediction_id, task_id=task_id, client_id=caller.client_id, user_hash=user_hash,
                  signal=signal, correction=correction)
    session.add(fb)
    session.flush()
    return fb
