"""Erasing one end user's data: their predictions, the feedback they gave, and the feedback
given on their predictions, within one client's users (or the admin token's).

The erasure holds across processes: it leaves a record (app/db/erasures.py) that every commit
of the user's predictions and feedback checks under the same per-user lock, so a request
accepted before the erasure (queued in any API process's batcher or feedback group) is refused
with `user-erased` and stores nothing, instead of landing after the delete.  A request accepted
after it is a returning user's, stored as new data."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.erasures import CLOCK_SKEW_S, lock_users, record_erasure
from app.db.session import rowcount, transaction
from app.db.tables import Client, Feedback, Prediction
from app.db.threads import in_db_thread
from app.core.errors import Conflict, NotFound
from app.core.security import hash_user_id, user_namespace
from app.process.state import AppState


def _delete_user_rows(sessions: sessionmaker[Session], *, user_id: str, client_id: int | None,
                      key: bytes) -> dict[str, int]:
    """One transaction, under the user's lock, with the erasure record.  Matches the namespaced
    hash, and the un-namespaced hash stored before namespaces existed on rows of the same client
    (new rows always carry the namespaced one, so only that one is locked and recorded)."""
    current = hash_user_id(user_id, key, user_namespace(client_id))
    legacy = hash_user_id(user_id, key, None)
    with transaction(sessions) as s:
        lock_users(s, [current], exclusive=True)
        if client_id is not None and s.get(Client, client_id) is None:
            raise NotFound(f"No client with id {client_id}.", field="client_id", slug="unknown-client",
                           title="Unknown client")
        record_erasure(s, user_hash=current, client_id=client_id)
        same_client_fb = Feedback.client_id.is_(None) if client_id is None else Feedback.client_id == client_id
        same_client_p = Prediction.client_id.is_(None) if client_id is None else Prediction.client_id == client_id
        fb = rowcount(s.execute(delete(Feedback).where(
            or_(Feedback.user_hash == current, and_(Feedback.user_hash == legacy, same_client_fb)))))
        theirs = select(Prediction.id).where(
            or_(Prediction.user_hash == current, and_(Prediction.user_hash == legacy, same_client_p)))
        # Feedback that others gave on this user's predictions goes with those predictions.
        fb += rowcount(s.execute(delete(Feedback).where(Feedback.prediction_id.in_(theirs))))
        preds = rowcount(s.execute(delete(Prediction).where(Prediction.id.in_(theirs))))
    return {"deleted_predictions": preds, "deleted_feedback": fb}


def user_erased(erased_at: datetime) -> Conflict:
    """The answer to a prediction or feedback for a user erased after the request was accepted."""
    return Conflict(f"This user's data was erased at {erased_at:%Y-%m-%d %H:%M:%S} UTC while this request was in "
                    "flight, so nothing was stored.  Send it again to store it as new data (the first "
                    f"{CLOCK_SKEW_S:g}s after an erasure still count as before it).", field="user_id",
                    slug="user-erased", title="User erased", erased_at=erased_at.isoformat())


async def erase_user(state: AppState, *, user_id: str, client_id: int | None) -> dict[str, int]:
    """Delete the user's rows and record the erasure, in one transaction (committed when this
    returns).  A prediction or feedback of theirs still in flight anywhere then fails with
    `user_erased` at its commit."""
    key = state.settings.resolved_user_hash_key
    return await in_db_thread(_delete_user_rows, state.sessions, user_id=user_id, client_id=client_id, key=key)
