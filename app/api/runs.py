"""Training runs: queue one, and its status, progress, loss curve and gate verdict (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel

from app.api.deps import AdminDep, PageDep, RowId, StateDep, TaskName, link_next
from app.services import runs

router = APIRouter(tags=["runs"])


class RunOut(BaseModel):
    id: int
    task: str
    status: str
    trigger: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    attempts: int
    requeued_from: int | None
    progress: dict[str, Any]
    loss_curve: list[Any]
    data_counts: dict[str, Any]
    device: str | None
    duration_s: float | None
    gate: dict[str, Any]
    candidate_version_id: int | None
    error: str | None


@router.post("/v1/tasks/{task}/retrain", status_code=status.HTTP_202_ACCEPTED)
def retrain(task: TaskName, _: AdminDep, state: StateDep) -> dict[str, object]:
    """Queue a training run; a worker picks it up.  One open run per task at a time (409 names it)."""
    return runs.retrain(state, task=task)


@router.get("/v1/runs/{run_id}", response_model=RunOut)
def get_run(run_id: RowId, _: AdminDep, state: StateDep) -> RunOut:
    return RunOut.model_validate(runs.get_run(state, run_id=run_id))


@router.get("/v1/tasks/{task}/runs", response_model=list[RunOut])
def list_runs(task: TaskName, _: AdminDep, state: StateDep, page: PageDep, request: Request,
              response: Response) -> list[RunOut]:
    """Newest first, a page at a time (`Link: rel="next"` while more follow)."""
    items, after = runs.runs_of(state, task=task, page=page)
    link_next(request, response, after)
    return [RunOut.model_validate(r) for r in items]


@router.post("/v1/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: RowId, _: AdminDep, state: StateDep) -> RunOut:
    """Stop a queued or running run; it ends `failed` ("cancelled …") and its candidate is never
    promoted.  409 if it has already ended."""
    return RunOut.model_validate(runs.cancel(state, run_id=run_id))
