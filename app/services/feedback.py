"""Recording signals about predictions: small writes, committed in groups (app/db/group_commit.py),
with no model work.  Each request still answers only once its own row is committed, and a
request that is wrong (an unknown prediction, someone else's, a bad correction) fails alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.erasures import erased, lock_users, refused
from app.db.group_commit import GroupCommit
from app.db.session import is_postgres, transaction
from app.db.tables import Feedback, Prediction, Task, utcnow
from app.core.errors import Forbidden, NotFound
from app.kinds import TaskSpec, get_kind
from app.core.security import hash_user_id, user_namespace
from app.services.clients import Caller, allow
from app.services.users import user_erased
from app.process.state import AppState

Recorded = tuple[dict[str, Any], str]  # (the feedback as the API shows it, the task's name)


@dataclass(frozen=True)
class Signal:
    """One feedback request: `correction` as sent (the kind makes it the stored label); `span`
    names the one part of the answer it is about (one span of a set); `accepted_at`: when the request
    came in (its user erased after that, it stores nothing)."""

    prediction_id: str
    caller: Caller
    signal: int
    correction: Any = None
    user_hash: str | None = None
    span: int | None = None
    accepted_at: datetime = field(default_factory=utcnow)


def unknown_prediction(prediction_id: str) -> NotFound:
    """The one answer for a prediction that does not exist, or that this caller may not see."""
    return NotFound(f"No prediction with id {prediction_id!r}.", field="prediction_id", slug="unknown-prediction",
                    title="Unknown prediction")


def _record(sessions: sessionmaker[Session], signals: Sequence[Signal]) -> list[Recorded | Exception]:
    """One transaction: one query for every prediction named, one insert for every valid signal.
    First the givers' lock against their erasure (app/db/erasures.py); the predictions are read
    FOR KEY SHARE on PostgreSQL, so an erasure or retention deleting one either waits for this
    commit (and its cascade takes the new feedback too) or has committed (the prediction is gone:
    404)."""
    with transaction(sessions) as s:
        givers = {sig.user_hash for sig in signals if sig.user_hash is not None}
        lock_users(s, givers)
        gone = erased(s, givers)
        query = (select(Prediction.id, Prediction.client_id, Prediction.label, Prediction.text,
                        Task.id.label("task_id"), Task.name, Task.kind, Task.labels, Task.descriptions)
                 .join(Task, Task.id == Prediction.task_id)
                 .where(Prediction.id.in_({sig.prediction_id for sig in signals})))
        if is_postgres(s.get_bind()):
            query = query.with_for_update(read=True, key_share=True, of=Prediction)
        found = {r.id: r for r in s.execute(query)}
        results: list[Recorded | Exception | None] = []
        made: list[tuple[int, Feedback, Any, str]] = []
        for sig in signals:
            row = found.get(sig.prediction_id)
            try:
                if sig.user_hash in gone and refused(sig.accepted_at, gone[sig.user_hash]):
                    raise user_erased(gone[sig.user_hash])
                if row is None or not sig.caller.sees(row.name):  # another team's: as if it did not exist
                    raise unknown_prediction(sig.prediction_id)
                allow(sig.caller, scope="feedback", task=row.name)
                if not sig.caller.is_admin and row.client_id != sig.caller.client_id:
                    raise Forbidden("This prediction was made for another client; feedback is only taken on your "
                                    "own.", field="prediction_id", slug="not-your-prediction")
                spec = TaskSpec(name=row.name, kind=row.kind, labels=list(row.labels),
                                descriptions=dict(row.descriptions or {}))
                kind = get_kind(row.kind)
                correction = sig.correction
                if correction is not None:
                    correction = kind.canonical(spec, correction, text=row.text, field="correction")
                if sig.span is not None:
                    kind.scope_label(row.label, sig.span)  # Invalid for a kind whose answers have no parts
                kind.check_feedback(spec, shown=row.label, signal=sig.signal, correction=correction, span=sig.span)
            except Exception as exc:
                results.append(exc)
                continue
            fb = Feedback(prediction_id=sig.prediction_id, task_id=row.task_id, client_id=sig.caller.client_id,
                          user_hash=sig.user_hash, signal=sig.signal, correction=correction, span=sig.span)
            s.add(fb)
            made.append((len(results), fb, kind, row.name))
            results.append(None)
        s.flush()
    for i, fb, kind, task_name in made:
        results[i] = ({"id": fb.id, "prediction_id": fb.prediction_id, "signal": fb.signal, "span": fb.span,
                       "correction": None if fb.correction is None else kind.answer_value(fb.correction),
                       "created_at": fb.created_at}, task_name)
    return results  # type: ignore[return-value]


def record_signals(sessions: sessionmaker[Session], signals: Sequence[Signal]) -> list[Recorded | Exception]:
    """Commit the signals together; if the database refuses the group, each one alone, so a row
    it refuses fails only its own request.

    An exception to the services' rule (app/services/__init__.py): this is the group commit's
    step, one transaction for many requests' signals, which `GroupCommit` calls with a batch and
    nothing else, so it takes the sessionmaker and the batch, and tests drive it on a database of
    their own without an app."""
    try:
        return _record(sessions, signals)
    except Exception:
        if len(signals) == 1:
            raise
    out: list[Recorded | Exception] = []
    for sig in signals:
        try:
            out.extend(_record(sessions, [sig]))
        except Exception as exc:
            out.append(exc)
    return out


def _group(state: AppState) -> GroupCommit[Signal, Recorded]:
    if state.feedback_group is None:
        state.feedback_group = GroupCommit(lambda signals: record_signals(state.sessions, signals),
                                           observe=state.metrics.feedback_group.observe)
    return state.feedback_group


async def give_feedback(state: AppState, *, prediction_id: str, caller: Caller, signal: int,
                        correction: Any, user_id: str | None, span: int | None = None) -> dict[str, Any]:
    """Record one signal (committed, with the others that arrived meanwhile, when this returns),
    counted in the process's metrics."""
    user_hash = (hash_user_id(user_id, state.settings.resolved_user_hash_key, user_namespace(caller.client_id))
                 if user_id else None)
    signal_in = Signal(prediction_id, caller, signal, correction, user_hash, span, accepted_at=utcnow())
    fb, task = await _group(state).submit(signal_in)
    state.metrics.feedback.labels(task, "correction" if correction else str(signal)).inc()
    return fb
