"""POST /v1/tasks/{task}/explain and POST /v1/predictions/{id}/explain"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CallerDep, StateDep, TaskName
from app.api.schemas import ExplainRequest, ExplainResponse, PredictionExplanation
from app.services.explanations import explain_prediction, explain_text

router = APIRouter(tags=["predict"])


@router.post("/v1/tasks/{task}/explain", response_model=ExplainResponse)
async def explain(task: TaskName, body: ExplainRequest, caller: CallerDep, state: StateDep) -> ExplainResponse:
    """Which parts of the text pushed the served version towards its label (positive weight) and
    which against (negative), as character spans; integrated gradients, `method` says how."""
    return ExplainResponse(**await explain_text(state, task=task, text=body.text, caller=caller))


@router.post("/v1/predictions/{prediction_id}/explain", response_model=PredictionExplanation)
async def explain_stored(prediction_id: str, caller: CallerDep, state: StateDep) -> PredictionExplanation:
    """A stored prediction's text, explained by the version served now (`model_version`; the
    prediction's own is `prediction_version`).  A client key sees only its own predictions."""
    return PredictionExplanation(**await explain_prediction(state, prediction_id=prediction_id, caller=caller))
