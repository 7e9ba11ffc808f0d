"""GET /v1/tasks/{task}/noise"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CallerDep, StateDep, TaskName
from app.api.schemas import NoiseResponse
from app.services.noise import task_noise

router = APIRouter(tags=["feedback"])


@router.get("/v1/tasks/{task}/noise", response_model=NoiseResponse)
def noise(task: TaskName, caller: CallerDep, state: StateDep) -> NoiseResponse:
    """How often each client's ±1 is flipped: the estimate, its 90 % interval and the evidence
    behind it (known truth, anchor points the model was sure of, other clients on the same texts).
    The admin sees every client; a key (`read` scope) sees its own row."""
    return NoiseResponse.model_validate(task_noise(state, task=task, caller=caller))
