"""DELETE /v1/users/{user_id}: erase one end user's predictions and feedback (admin)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import delete, select

from app.api.deps import AdminDep, SessionDep, StateDep
from app.db.models import Feedback, Prediction
from app.security import hash_user_id

router = APIRouter(tags=["privacy"])


@router.delete("/v1/users/{user_id:path}")
def erase_user(user_id: str, _: AdminDep, session: SessionDep, state: StateDep) -> dict[str, int]:
    """Everything stored under this user's keyed hash goes, in one transaction."""
    uh = hash_user_id(user_id, state.settings.resolved_user_hash_key)
    with session.begin():
        fb = session.execute(delete(Feedback).where(Feedback.user_hash == uh)).rowcount
        # Feedback that others gave on this user's predictions goes with those predictions.
        theirs = select(Prediction.id).where(Prediction.user_hash == uh)
        fb += session.execute(delete(Feedback).where(Feedback.prediction_id.in_(theirs))).rowcount
        preds = session.execute(delete(Prediction).where(Prediction.user_hash == uh)).rowcount
    return {"deleted_predictions": preds, "deleted_feedback": fb}
