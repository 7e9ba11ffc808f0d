"""Erasing one end user's data: their predictions, the feedback they gave, and the feedback
given on their predictions, within one client's users (or the admin token's)."""

from __future__ import annotations

import asyncio

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.session import transaction
from app.db.tables import Client, Feedback, Prediction
from app.db.threads import in_db_thread
from app.errors import NotFound
from app.security import hash_user_id, user_namespace
from app.state import AppState


def _delete_user_rows(sessions: sessionmaker[Session], *, user_id: str, client_id: int | None,
                      key: bytes) -> dict[str, int]:
    """One transaction.  Matches the namespaced hash, and the un-namespaced hash stored before
    namespaces existed on rows of the same client."""
    current = hash_user_id(user_id, key, user_namespace(client_id))
    legacy = hash_user_id(user_id, key, None)
    with transaction(sessions) as s:
        if client_id is not None and s.get(Client, client_id) is None:
            raise NotFound(f"No client with id {client_id}.", field="client_id", slug="unknown-client",
                           title="Unknown client")
        same_client_fb = Feedback.client_id.is_(None) if client_id is None else Feedback.client_id == client_id
        same_client_p = Prediction.client_id.is_(None) if client_id is None else Prediction.client_id == client_id
        fb = s.execute(delete(Feedback).where(
            or_(Feedback.user_hash == current, and_(Feedback.user_hash == legacy, same_client_fb)))).rowcount
        theirs = select(Prediction.id).where(
            or_(Prediction.user_hash == current, and_(Prediction.user_hash == legacy, same_client_p)))
        # Feedback that others gave on this user's predictions goes with those predictions.
        fb += s.execute(delete(Feedback).where(Feedback.prediction_id.in_(theirs))).rowcount
        preds = s.execute(delete(Prediction).where(Prediction.id.in_(theirs))).rowcount
    return {"deleted_predictions": preds, "deleted_feedback": fb}


async def erase_user(state: AppState, *, user_id: str, client_id: int | None) -> dict[str, int]:
    """Delete the user's rows; wait until every prediction this process had queued when the
    erasure began is committed (a queued prediction must not be written after its user was
    erased); delete again.  Committed when this returns."""
    key = state.settings.resolved_user_hash_key
    first = await in_db_thread(_delete_user_rows, state.sessions, user_id=user_id, client_id=client_id, key=key)
    await asyncio.gather(*(b.settled() for b in list(state.batchers.values())))
    second = await in_db_thread(_delete_user_rows, state.sessions, user_id=user_id, client_id=client_id, key=key)
    return {k: first[k] + second[k] for k in first}
