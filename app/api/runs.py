"""Training runs: status, progress, loss curve and gate verdict (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel
from sqlalchemy import select

from app.api.deps import AdminDep, SessionDep, load_task
from app.api.problems import Problem
from app.db.models import Task, TrainingRun
from app.learning.runs import enqueue_run

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


def run_out(run: TrainingRun, task_name: str) -> RunOut:
    return RunOut.model_validate({**{c: getattr(run, c) for c in RunOut.model_fields if c != "task"},
                                  "task": task_name})


@router.post("/v1/tasks/{task}/retrain", status_code=status.HTTP_202_ACCEPTED)
def retrain(task: str, _: AdminDep, session: SessionDep) -> dict[str, object]:
    """Queue a training run; a worker picks it up.  One open run per task at a time."""
    with session.begin():
        t = load_task(session, task)
        run, created = enqueue_run(session, t, trigger="admin")
        run_id, run_status = run.id, run.status
    if not created:
        raise Problem(409, "run-in-progress", "Run already open",
                      f"Run {run_id} for task {task!r} is {run_status}; wait for it or follow it.",
                      field="task", run_id=run_id, run_status=run_status)
    return {"run_id": run_id, "status": run_status}


@router.get("/v1/runs/{run_id}", response_model=RunOut)
def get_run(run_id: int, _: AdminDep, session: SessionDep) -> RunOut:
    row = session.execute(select(TrainingRun, Task.name).join(Task, Task.id == TrainingRun.task_id)
                          .where(TrainingRun.id == run_id)).one_or_none()
    if row is None:
        raise Problem(404, "unknown-run", "Unknown run", f"No training run with id {run_id}.", field="run_id")
    return run_out(*row)


@router.get("/v1/tasks/{task}/runs", response_model=list[RunOut])
def list_runs(task: str, _: AdminDep, session: SessionDep) -> list[RunOut]:
    t = load_task(session, task)
    runs = session.scalars(select(TrainingRun).where(TrainingRun.task_id == t.id).order_by(TrainingRun.id.desc()))
    return [run_out(r, t.name) for r in runs]
