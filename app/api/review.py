"""GET /v1/tasks/{task}/review"""

from __future__ import annotations

from fastapi import APIRouter, Query

from app.api.deps import CallerDep, StateDep, TaskName
from app.api.schemas import ReviewResponse
from app.services.review import REVIEW_MAX_LIMIT, review_queue

router = APIRouter(tags=["feedback"])


@router.get("/v1/tasks/{task}/review", response_model=ReviewResponse)
def review(task: TaskName, caller: CallerDep, state: StateDep,
           limit: int = Query(50, ge=1, le=REVIEW_MAX_LIMIT,
                             description=f"Most items to return, 1 to {REVIEW_MAX_LIMIT}.")) -> ReviewResponse:
    """The predictions where a person's correction is worth most, best first: −1s without a
    correction (most recent first), then the rest by value (uncertainty, boosted for rare labels).
    A client sees its own predictions; the admin sees all."""
    return ReviewResponse.model_validate(review_queue(state, task=task, caller=caller, limit=limit))
