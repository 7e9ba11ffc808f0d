"""POST /v1/predictions/{id}/feedback"""

from __future__ import annotations

from fastapi import APIRouter, status

from app.api.deps import CallerDep, StateDep, in_db_thread
from app.schemas import FeedbackOut, FeedbackRequest
from app.security import hash_user_id
from app.services.feedback import record_feedback

router = APIRouter(tags=["feedback"])


@router.post("/v1/predictions/{prediction_id}/feedback", status_code=status.HTTP_201_CREATED,
             response_model=FeedbackOut)
async def give_feedback(prediction_id: str, body: FeedbackRequest, caller: CallerDep, state: StateDep) -> FeedbackOut:
    """+1 (right), -1 (wrong), optionally with the right label; committed before the 201.

    One short transaction on the DB thread pool and no model work; the connection is held
    only for the transaction, not while the answer is written."""
    user_hash = hash_user_id(body.user_id, state.settings.resolved_user_hash_key) if body.user_id else None

    def store() -> tuple[int, FeedbackOut]:
        with state.sessions() as session, session.begin():
            fb = record_feedback(session, prediction_id=prediction_id, caller=caller, signal=body.signal,
                                 correction=body.correction, user_hash=user_hash)
            return fb.task_id, FeedbackOut.model_validate(fb, from_attributes=True)

    task_id, out = await in_db_thread(store)
    task = next((m.task for m in state.registry.loaded().values() if m.task_id == task_id), str(task_id))
    state.metrics.feedback.labels(task, "correction" if body.correction else str(body.signal)).inc()
    return out
