"""The tasks, a task's versions and its training runs: the admin's pages (the overview is
everyone's), and the forms that create a task, add examples, activate a version and queue a run."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Form, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import RowId, StateDep, TaskName
from app.api.schemas import TaskCreate
from app.console.deps import ConsoleAdmin, ConsoleCaller, Csrf
from app.console.render import back_to, page_router, render
from app.console.session import check_csrf
from app.services import console as page_data
from app.services.examples import import_examples, parse_csv
from app.services.noise import task_noise
from app.services.runs import retrain
from app.services.tasks import create_task
from app.services.versions import activate_version

router = page_router()


@router.get("")
async def tasks_page(request: Request, state: StateDep, caller: ConsoleCaller) -> Response:
    data = await run_in_threadpool(page_data.overview, state, caller=caller)
    return render(request, state, "tasks.html", data, caller=caller)


@router.post("/tasks")
async def new_task(request: Request, state: StateDep, caller: ConsoleAdmin,
                   name: Annotated[str, Form(max_length=64)], kind: Annotated[str, Form(max_length=32)],
                   labels: Annotated[str, Form(max_length=100_000)] = "",
                   low: Annotated[float | None, Form()] = None, high: Annotated[float | None, Form()] = None,
                   csrf: Csrf = "") -> Response:
    """Create a task as POST /v1/tasks does (the same schema, the same service, then loaded to
    serve): labels one per line or comma-separated; a scale's range, for a kind that scores on
    one, from `low` and `high`."""
    check_csrf(state, request, csrf)
    names = [x.strip() for x in labels.replace(",", "\n").splitlines() if x.strip()]
    value_range = [low, high] if low is not None and high is not None else None
    # validated as a dict: the kinds' options (range) are fields only the runtime model has
    body = TaskCreate.model_validate({"name": name.strip(), "kind": kind, "labels": names, "range": value_range})
    await run_in_threadpool(
        create_task, state, name=body.name, kind=body.kind, labels=body.labels,
        descriptions=body.descriptions, options=body.options(), lambda_data=body.lambda_data,
        feedback_loss=body.feedback_loss, finetune=body.finetune, quantize=body.quantize, policy=body.policy)
    await state.served.ensure(body.name)
    return back_to(f"/ui/tasks/{quote(body.name)}/try")


@router.post("/tasks/{task}/examples")
async def add_examples(request: Request, task: TaskName, state: StateDep, caller: ConsoleAdmin,
                       csv: Annotated[str, Form(max_length=2_000_000)], csrf: Csrf = "") -> Response:
    """Labelled examples pasted as CSV with a header (text,label or text,score), as the API takes them."""
    check_csrf(state, request, csrf)
    done = await run_in_threadpool(lambda: import_examples(state, task=task, rows=parse_csv(csv.encode())))
    return back_to(f"/ui/tasks/{quote(task)}", imported=done["imported"])


@router.get("/tasks/{task}")
async def versions_page(request: Request, task: TaskName, state: StateDep, caller: ConsoleAdmin,
                        activated: int | None = None, imported: int | None = None) -> Response:
    data = await run_in_threadpool(page_data.task_detail, state, caller=caller, task=task)
    noise = await run_in_threadpool(task_noise, state, task=task, caller=caller)
    return render(request, state, "versions.html", {**data, "noise": noise, "activated": activated,
                                                    "imported": imported}, caller=caller)


@router.post("/tasks/{task}/versions/{version}/activate")
async def activate(request: Request, task: TaskName, version: RowId, state: StateDep, caller: ConsoleAdmin,
                   csrf: Csrf = "") -> Response:
    check_csrf(state, request, csrf)
    await run_in_threadpool(activate_version, state, task=task, version=version)
    return back_to(f"/ui/tasks/{quote(task)}", activated=version)


@router.get("/tasks/{task}/runs")
async def runs_page(request: Request, task: TaskName, state: StateDep, caller: ConsoleAdmin,
                    queued: int | None = None) -> Response:
    data = await run_in_threadpool(page_data.runs_page, state, caller=caller, task=task)
    return render(request, state, "runs.html", {**data, "queued": queued}, caller=caller)


@router.post("/tasks/{task}/retrain")
async def queue_run(request: Request, task: TaskName, state: StateDep, caller: ConsoleAdmin,
                    csrf: Csrf = "") -> Response:
    check_csrf(state, request, csrf)
    run = await run_in_threadpool(retrain, state, task=task)
    return back_to(f"/ui/tasks/{quote(task)}/runs", queued=run["run_id"])


@router.get("/runs/{run_id}/status")
async def run_status(run_id: RowId, state: StateDep, caller: ConsoleAdmin) -> Response:
    """What the Runs page polls while a run trains (JSON)."""
    data = await run_in_threadpool(page_data.run_status, state, caller=caller, run_id=run_id)
    return JSONResponse(data, headers={"Cache-Control": "no-store"})
