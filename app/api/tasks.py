"""Tasks: create (admin), list and describe (any caller)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminDep, CallerDep, PageDep, StateDep, TaskName, link_next
from app.api.schemas import TaskCreate, TaskOut
from app.services import tasks

router = APIRouter(tags=["tasks"])


@router.post("/v1/tasks", status_code=status.HTTP_201_CREATED, response_model=TaskOut, response_model_by_alias=True)
async def create(body: TaskCreate, _: AdminDep, state: StateDep) -> TaskOut:
    """Create a task and its zero-shot version 0 (built from the label names), ready to predict."""
    created = await run_in_threadpool(
        tasks.create_task, state, name=body.name, kind=body.kind, labels=body.labels,
        descriptions=body.descriptions, options=body.options(), lambda_data=body.lambda_data,
        feedback_loss=body.feedback_loss, finetune=body.finetune, quantize=body.quantize, policy=body.policy)
    await state.served.ensure(body.name)
    return TaskOut.model_validate(created)


@router.get("/v1/tasks", response_model=list[TaskOut], response_model_by_alias=True)
def list_tasks(caller: CallerDep, state: StateDep, page: PageDep, request: Request, response: Response
               ) -> list[TaskOut]:
    """The tasks this key may use (every task for the admin), oldest first, a page at a time
    (`Link: rel="next"` while more follow)."""
    items, after = tasks.list_tasks(state, caller=caller, page=page)
    link_next(request, response, after)
    return [TaskOut.model_validate(t) for t in items]


@router.get("/v1/tasks/{task}", response_model=TaskOut, response_model_by_alias=True)
def get_task(task: TaskName, caller: CallerDep, state: StateDep) -> TaskOut:
    return TaskOut.model_validate(tasks.get_task(state, name=task, caller=caller))
