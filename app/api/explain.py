"""POST /v1/tasks/{task}/explain"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CallerDep, StateDep, TaskName
from app.api.schemas import ExplainRequest, ExplainResponse
from app.services.explanations import explain_text

router = APIRouter(tags=["predict"])


@router.post("/v1/tasks/{task}/explain", response_model=ExplainResponse)
async def explain(task: TaskName, body: ExplainRequest, caller: CallerDep, state: StateDep) -> ExplainResponse:
    """Which parts of the text pushed the served version towards its label (positive weight) and
    which against (negative), as character spans; integrated gradients, `method` says how."""
    return ExplainResponse(**await explain_text(state, task=task, text=body.text, caller=caller))
