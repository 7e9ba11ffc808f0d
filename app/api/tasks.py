"""Tasks: create (admin), list and describe (any caller)."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminDep, CallerDep, SessionDep, StateDep, load_task
from app.db.models import Task
from app.schemas import TaskCreate, TaskOut
from app.services.tasks import create_task, describe

router = APIRouter(tags=["tasks"])


@router.post("/v1/tasks", status_code=status.HTTP_201_CREATED, response_model=TaskOut, response_model_by_alias=True)
async def create(body: TaskCreate, _: AdminDep, state: StateDep) -> TaskOut:
    """Create a task and its zero-shot version 0 (built from the label names), ready to predict."""
    task = await run_in_threadpool(create_task, sessions=state.sessions, settings=state.settings, payload=body)
    await state.registry.ensure(task.name)

    def _describe() -> TaskOut:
        with state.sessions() as session:
            return describe(session, load_task(session, task.name))

    return await run_in_threadpool(_describe)


@router.get("/v1/tasks", response_model=list[TaskOut], response_model_by_alias=True)
def list_tasks(_: CallerDep, session: SessionDep) -> list[TaskOut]:
    return [describe(session, t) for t in session.scalars(select(Task).order_by(Task.id))]


@router.get("/v1/tasks/{task}", response_model=TaskOut, response_model_by_alias=True)
def get_task(task: str, _: CallerDep, session: SessionDep) -> TaskOut:
    return describe(session, load_task(session, task))
