"""POST /v1/predictions/{id}/feedback"""

from __future__ import annotations

from fastapi import APIRouter, status

from app.api.deps import CallerDep, StateDep
from app.api.schemas import FeedbackOut, FeedbackRequest
from app.services.feedback import give_feedback as record

router = APIRouter(tags=["feedback"])


@router.post("/v1/predictions/{prediction_id}/feedback", status_code=status.HTTP_201_CREATED,
             response_model=FeedbackOut)
async def give_feedback(prediction_id: str, body: FeedbackRequest, caller: CallerDep, state: StateDep) -> FeedbackOut:
    """+1 (right), -1 (wrong), optionally with the right label; committed before the 201."""
    fb = await record(state, prediction_id=prediction_id, caller=caller, signal=body.signal,
                      correction=body.correction_value(), user_id=body.user_id, span=body.span)
    return FeedbackOut.model_validate(fb)
