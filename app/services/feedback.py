"""Recording a signal about one prediction: a small transaction and no model work."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.session import transaction
from app.db.tables import Feedback, Prediction, Task
from app.db.threads import in_db_thread
from app.errors import Forbidden, NotFound
from app.kinds import TaskSpec, get_kind
from app.security import hash_user_id, user_namespace
from app.services.clients import Caller, allow
from app.state import AppState


def record_feedback(
    sessions: sessionmaker[Session],
    *,
    prediction_id: str,
    caller: Caller,
    signal: int,
    correction: Any,
    user_hash: str | None,
    span: int | None = None,
) -> tuple[dict[str, Any], str]:
    """Store one signal on one of the caller's own predictions; (the stored feedback as the API
    shows it, the correction as the kind's value; the task's name).
    The correction, as sent, is made the stored label by the task's kind; `span` names the one
    part of the answer the signal is about (a tagging span).  Committed when this returns."""
    with transaction(sessions) as s:
        row = s.execute(
            select(Prediction.client_id, Prediction.label, Prediction.text, Task.id, Task.name, Task.kind,
                   Task.labels, Task.descriptions)
            .join(Task, Task.id == Prediction.task_id)
            .where(Prediction.id == prediction_id)
        ).one_or_none()
        if row is None:
            raise NotFound(f"No prediction with id {prediction_id!r}.", field="prediction_id",
                           slug="unknown-prediction", title="Unknown prediction")
        owner, shown, text, task_id, task_name, kind_name, labels, descriptions = row
        if not caller.sees(task_name):  # another team's prediction: as if it did not exist
            raise NotFound(f"No prediction with id {prediction_id!r}.", field="prediction_id",
                           slug="unknown-prediction", title="Unknown prediction")
        allow(caller, "feedback", task_name)
        if not caller.is_admin and owner != caller.client_id:
            raise Forbidden("This prediction was made for another client; feedback is only taken on your own.",
                            field="prediction_id", slug="not-your-prediction")
        spec = TaskSpec(name=task_name, kind=kind_name, labels=list(labels), descriptions=dict(descriptions or {}))
        kind = get_kind(kind_name)
        if correction is not None:
            correction = kind.canonical(spec, correction, text=text, field="correction")
        if span is not None:
            kind.scope_label(shown, span)  # Invalid for a kind whose answers have no parts
        kind.check_feedback(spec, shown=shown, signal=signal, correction=correction, span=span)
        fb = Feedback(prediction_id=prediction_id, task_id=task_id, client_id=caller.client_id,
                      user_hash=user_hash, signal=signal, correction=correction, span=span)
        s.add(fb)
        s.flush()
    shown_as = {"id": fb.id, "prediction_id": fb.prediction_id, "signal": fb.signal, "span": fb.span,
                "correction": None if fb.correction is None else kind.answer_value(fb.correction),
                "created_at": fb.created_at}
    return shown_as, task_name


async def give_feedback(state: AppState, *, prediction_id: str, caller: Caller, signal: int,
                        correction: Any, user_id: str | None, span: int | None = None) -> dict[str, Any]:
    """`record_feedback` on the DB thread pool (no model work, the connection held only for the
    transaction), counted in the process's metrics."""
    user_hash = (hash_user_id(user_id, state.settings.resolved_user_hash_key, user_namespace(caller.client_id))
                 if user_id else None)
    fb, task = await in_db_thread(record_feedback, state.sessions, prediction_id=prediction_id, caller=caller,
                                  signal=signal, correction=correction, user_hash=user_hash, span=span)
    state.metrics.feedback.labels(task, "correction" if correction else str(signal)).inc()
    return fb
