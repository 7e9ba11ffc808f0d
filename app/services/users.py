"""Erasing one end user's data."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.session import transaction
from app.db.tables import Feedback, Prediction
from app.security import hash_user_id


def erase_user(sessions: sessionmaker[Session], *, user_id: str, key: bytes) -> dict[str, int]:
    """Everything stored under this user's keyed hash goes, in one transaction."""
    uh = hash_user_id(user_id, key)
    with transaction(sessions) as s:
        fb = s.execute(delete(Feedback).where(Feedback.user_hash == uh)).rowcount
        # Feedback that others gave on this user's predictions goes with those predictions.
        theirs = select(Prediction.id).where(Prediction.user_hash == uh)
        fb += s.execute(delete(Feedback).where(Feedback.prediction_id.in_(theirs))).rowcount
        preds = s.execute(delete(Prediction).where(Prediction.user_hash == uh)).rowcount
    return {"deleted_predictions": preds, "deleted_feedback": fb}
