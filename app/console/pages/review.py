"""Where a person teaches the model: the review queue and its corrections, trying a text, and
the explanation of an answer."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Form, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import StateDep, TaskName
from app.console.deps import ConsoleCaller, Csrf
from app.console.render import back_to, page_router, render
from app.console.session import check_csrf
from app.core.errors import DomainError
from app.services import console as page_data
from app.services.explanations import explain_prediction, explain_text
from app.services.predictions import predict

router = page_router()


@router.get("/tasks/{task}/review")
async def review_page(request: Request, task: TaskName, state: StateDep, caller: ConsoleCaller,
                      saved: str | None = None) -> Response:
    data = await run_in_threadpool(page_data.review_page, state, caller=caller, task=task)
    return render(request, state, "review.html", {**data, "saved": saved}, caller=caller)


@router.post("/tasks/{task}/review")
async def give_label(request: Request, task: TaskName, state: StateDep, caller: ConsoleCaller,
                     prediction_id: Annotated[str, Form(max_length=64)],
                     answer: Annotated[str, Form(max_length=20_000)] = "", csrf: Csrf = "") -> Response:
    check_csrf(state, request, csrf)
    await page_data.correct(state, caller=caller, prediction_id=prediction_id, answer=answer)
    return back_to(f"/ui/tasks/{quote(task)}/review", saved=prediction_id)


@router.get("/tasks/{task}/try")
async def try_page(request: Request, task: TaskName, state: StateDep, caller: ConsoleCaller) -> Response:
    info = await run_in_threadpool(page_data.task_info, state, caller=caller, task=task)
    return render(request, state, "try.html", {"task": info, "text": "", "result": None,
                                               "explanation": None, "why_not": None}, caller=caller)


@router.post("/tasks/{task}/try")
async def try_text(request: Request, task: TaskName, state: StateDep, caller: ConsoleCaller,
                   text: Annotated[str, Form(max_length=100_000)], csrf: Csrf = "") -> Response:
    check_csrf(state, request, csrf)
    result = await predict(state, task=task, texts=[text], single=True, caller=caller, user_id=None)
    explanation, why_not = None, None
    try:
        explanation = await explain_text(state, task=task, text=text, caller=caller)
    except DomainError as exc:  # a kind whose answers are not explained: the answer is shown without one
        why_not = exc.detail
    info = await run_in_threadpool(page_data.task_info, state, caller=caller, task=task)
    return render(request, state, "try.html", {"task": info, "text": text, "result": result,
                                               "explanation": explanation, "why_not": why_not}, caller=caller)


@router.get("/predictions/{prediction_id}/explain")
async def explain_page(request: Request, prediction_id: str, state: StateDep, caller: ConsoleCaller) -> Response:
    explanation = await explain_prediction(state, prediction_id=prediction_id, caller=caller)
    return render(request, state, "explain.html", {"explanation": explanation}, caller=caller)
