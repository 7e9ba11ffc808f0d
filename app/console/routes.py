"""The console's pages.  Each route parses the request, calls one service and renders a
template; a domain error becomes an HTML page with the API's status for it, and a missing
session the login page."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.api.deps import RowId, StateDep, TaskName
from app.api import tasks as task_routes
from app.api.problems import status_of
from app.api.schemas import TaskCreate
from app.console import charts
from app.console.session import (LoginRequired, check_csrf, console_caller, csrf_for, dev_mode, end_session,
                                 remember_csrf, start_session)
from app.core.errors import DomainError, Forbidden
from app.services import console as pages
from app.services.clients import (SCOPES, Caller, authenticate, create_client, list_clients, revoke_client,
                                  set_trusted, spend_request)
from app.services.examples import import_examples, parse_csv
from app.services.explanations import explain_prediction, explain_text
from app.services.noise import task_noise
from app.services.paging import Page
from app.services.predictions import predict
from app.services.runs import retrain
from app.services.versions import activate_version

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# Everything a page loads comes from this server: no CDN (Flywheel runs where nothing can be downloaded).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def ago(when: datetime | None) -> str:
    """'3 min ago' for a timestamp, '—' for none."""
    if when is None:
        return "—"
    s = (datetime.now(timezone.utc) - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{int(s // size)} {unit} ago"
    return "just now"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


templates.env.filters.update(ago=ago, pct=pct)
templates.env.globals.update(charts=charts, version=__version__)


def render(request: Request, state: Any, name: str, context: dict[str, Any], *, caller: Caller | None,
           status_code: int = 200) -> HTMLResponse:
    csrf = csrf_for(state, request)
    response = templates.TemplateResponse(request, name, {**context, "caller": caller, "csrf": csrf.token,
                                                          "dev_mode": dev_mode(state)}, status_code=status_code)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    remember_csrf(request, response, csrf)
    return response


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return render(request, request.app.state.flywheel, "error.html",
                  {"title": title, "detail": detail, "status": status}, caller=None, status_code=status)


class ConsoleRoute(APIRoute):
    """Answers a domain error with an HTML page (status as in the API) and a missing session
    with a redirect to the login page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as exc:
                return RedirectResponse(f"/ui/login?next={quote(exc.next_path)}", status_code=303)
            except DomainError as exc:
                return error_page(request, status_of(exc), exc.title, exc.detail)
            except (RequestValidationError, ValidationError) as exc:
                return error_page(request, 422, "Invalid input", "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'][1:] or e['loc'])}: {e['msg']}" for e in exc.errors()))

        return route


router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)


async def get_console_caller(request: Request, state: StateDep) -> Caller:
    """The session's caller, within the same request rate as the key's API calls."""
    caller = await console_caller(state, request)
    spend_request(state, caller)
    return caller


ConsoleCaller = Annotated[Caller, Depends(get_console_caller)]


async def get_console_admin(caller: ConsoleCaller) -> Caller:
    if not caller.is_admin:
        raise Forbidden("This page is the admin's; log in with the admin token.", field="session")
    return caller


ConsoleAdmin = Annotated[Caller, Depends(get_console_admin)]
Csrf = Annotated[str, Form(description="The form's CSRF token.")]


def back_to(path: str, **query: Any) -> RedirectResponse:
    q = "&".join(f"{k}={quote(str(v))}" for k, v in query.items() if v is not None)
    return RedirectResponse(f"{path}?{q}" if q else path, status_code=303)


# ---------------------------------------------------------------- login


@router.get("/login")
def login_page(request: Request, state: StateDep, next: str = "/ui") -> Response:  # noqa: A002
    return render(request, state, "login.html", {"next": next, "error": None}, caller=None)


def _local(path: str) -> str:
    """Only a path on this server: never redirect a login elsewhere."""
    parts = urlsplit(path)
    return path if path.startswith("/ui") and not parts.netloc and not parts.scheme else "/ui"


@router.post("/login")
async def login(request: Request, state: StateDep, token: Annotated[str, Form(max_length=512)] = "",
                next: Annotated[str, Form(max_length=2048)] = "/ui", csrf: Csrf = "") -> Response:  # noqa: A002
    check_csrf(state, request, csrf)
    caller = await authenticate(state, token.strip(), request.client.host if request.client else "unknown") \
        if token.strip() else None
    if caller is None:
        return render(request, state, "login.html", {"next": next, "error": "Unknown or revoked key or token."},
                      caller=None, status_code=401)
    response = back_to(_local(next))
    start_session(state, request, response, caller, token.strip())
    return response


@router.post("/logout")
def logout(request: Request, state: StateDep, csrf: Csrf = "") -> Response:
    check_csrf(state, request, csrf)
    response = back_to("/ui/login")
    end_session(response)
    return response


# ---------------------------------------------------------------- tasks, versions, runs


@router.get("")
async def tasks_page(request: Request, state: StateDep, caller: ConsoleCaller) -> Response:
    data = await run_in_threadpool(pages.overview, state.sessions, state.settings, caller=caller)
    return render(request, state, "tasks.html", data, caller=caller)


@router.post("/tasks")
async def new_task(request: Request, state: StateDep, caller: ConsoleAdmin,
                   name: Annotated[str, Form(max_length=64)], kind: Annotated[str, Form(max_length=32)],
                   labels: Annotated[str, Form(max_length=100_000)] = "",
                   low: Annotated[float | None, Form()] = None, high: Annotated[float | None, Form()] = None,
                   csrf: Csrf = "") -> Response:
    """Create a task as POST /v1/tasks does (the same schema and route function): labels one per
    line or comma-separated; a rating's range from `low` and `high`."""
    check_csrf(state, request, csrf)
    names = [x.strip() for x in labels.replace(",", "\n").splitlines() if x.strip()]
    value_range = [low, high] if low is not None and high is not None else None
    body = TaskCreate(name=name.strip(), kind=kind, labels=names, range=value_range)
    await task_routes.create(body, caller, state)
    return back_to(f"/ui/tasks/{quote(body.name)}/try")


@router.post("/tasks/{task}/examples")
async def add_examples(request: Request, task: TaskName, state: StateDep, caller: ConsoleAdmin,
                       csv: Annotated[str, Form(max_length=2_000_000)], csrf: Csrf = "") -> Response:
    """Labelled examples pasted as CSV with a header (text,label or text,score), as the API takes them."""
    check_csrf(state, request, csrf)
    done = await run_in_threadpool(lambda: import_examples(state.sessions, task=task, rows=parse_csv(csv.encode()),
                                                           max_chars=state.settings.max_text_chars))
    return back_to(f"/ui/tasks/{quote(task)}", imported=done["imported"])


@router.get("/tasks/{task}")
async def versions_page(request: Request, task: TaskName, state: StateDep, caller: ConsoleAdmin,
                        activated: int | None = None, imported: int | None = None) -> Response:
    data = await run_in_threadpool(pages.task_detail, state.sessions, state.settings, caller=caller, task=task)
    noise = await run_in_threadpool(lambda: task_noise(state.sessions, task=task, caller=caller,
                                                       max_rows=state.settings.max_training_rows))
    return render(request, state, "versions.html", {**data, "noise": noise, "activated": activated,
                                                    "imported": imported}, caller=caller)


@router.post("/tasks/{task}/versions/{version}/activate")
async def activate(request: Request, task: TaskName, version: RowId, state: StateDep, caller: ConsoleAdmin,
                   csrf: Csrf = "") -> Response:
    check_csrf(state, request, csrf)
    await run_in_threadpool(activate_version, state.sessions, task=task, version=version)
    return back_to(f"/ui/tasks/{quote(task)}", activated=version)


@router.get("/tasks/{task}/runs")
async def runs_page(request: Request, task: TaskName, state: StateDep, caller: ConsoleAdmin,
                    queued: int | None = None) -> Response:
    data = await run_in_threadpool(pages.runs_page, state.sessions, caller=caller, task=task)
    return render(request, state, "runs.html", {**data, "queued": queued}, caller=caller)


@router.post("/tasks/{task}/retrain")
async def queue_run(request: Request, task: TaskName, state: StateDep, caller: ConsoleAdmin,
                    csrf: Csrf = "") -> Response:
    check_csrf(state, request, csrf)
    run = await run_in_threadpool(retrain, state.sessions, task=task)
    return back_to(f"/ui/tasks/{quote(task)}/runs", queued=run.id)


@router.get("/runs/{run_id}/status")
async def run_status(run_id: RowId, state: StateDep, caller: ConsoleAdmin) -> Response:
    """What the Runs page polls while a run trains (JSON)."""
    data = await run_in_threadpool(pages.run_status, state.sessions, caller=caller, run_id=run_id)
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------- review, try it, explanations


@router.get("/tasks/{task}/review")
async def review_page(request: Request, task: TaskName, state: StateDep, caller: ConsoleCaller,
                      saved: str | None = None) -> Response:
    data = await run_in_threadpool(pages.review_page, state.sessions, caller=caller, task=task)
    return render(request, state, "review.html", {**data, "saved": saved}, caller=caller)


@router.post("/tasks/{task}/review")
async def give_label(request: Request, task: TaskName, state: StateDep, caller: ConsoleCaller,
                     prediction_id: Annotated[str, Form(max_length=64)],
                     answer: Annotated[str, Form(max_length=20_000)] = "", csrf: Csrf = "") -> Response:
    check_csrf(state, request, csrf)
    await pages.correct(state, caller=caller, prediction_id=prediction_id, answer=answer)
    return back_to(f"/ui/tasks/{quote(task)}/review", saved=prediction_id)


@router.get("/tasks/{task}/try")
async def try_page(request: Request, task: TaskName, state: StateDep, caller: ConsoleCaller) -> Response:
    info = await run_in_threadpool(lambda: pages.task_info(state.sessions, caller=caller, task=task))
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
    except DomainError as exc:  # a rating or tagging task: the answer is shown without one
        why_not = exc.detail
    info = await run_in_threadpool(lambda: pages.task_info(state.sessions, caller=caller, task=task))
    return render(request, state, "try.html", {"task": info, "text": text, "result": result,
                                               "explanation": explanation, "why_not": why_not}, caller=caller)


@router.get("/predictions/{prediction_id}/explain")
async def explain_page(request: Request, prediction_id: str, state: StateDep, caller: ConsoleCaller) -> Response:
    explanation = await explain_prediction(state, prediction_id=prediction_id, caller=caller)
    return render(request, state, "explain.html", {"explanation": explanation}, caller=caller)


# ---------------------------------------------------------------- clients


@router.get("/clients")
async def clients_page(request: Request, state: StateDep, caller: ConsoleAdmin) -> Response:
    items, _ = await run_in_threadpool(list_clients, state.sessions, Page(limit=500))
    tasks = await run_in_threadpool(pages.task_names, state.sessions)
    return render(request, state, "clients.html", {"clients": items, "tasks": tasks, "scopes": SCOPES,
                                                   "created": None}, caller=caller)


@router.post("/clients")
async def create(request: Request, state: StateDep, caller: ConsoleAdmin,
                 name: Annotated[str, Form(min_length=1, max_length=128)],
                 tasks: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults
                 scopes: Annotated[list[str], Form()] = [], csrf: Csrf = "") -> Response:  # noqa: B006
    check_csrf(state, request, csrf)
    client, key = await run_in_threadpool(lambda: create_client(state.sessions, name=name, tasks=tasks,
                                                                scopes=scopes))
    items, _ = await run_in_threadpool(list_clients, state.sessions, Page(limit=500))
    names = await run_in_threadpool(pages.task_names, state.sessions)
    return render(request, state, "clients.html", {"clients": items, "tasks": names, "scopes": SCOPES,
                                                   "created": {**client, "key": key}}, caller=caller,
                  status_code=201)


@router.post("/clients/{client_id}/revoke")
async def revoke(request: Request, client_id: RowId, state: StateDep, caller: ConsoleAdmin,
                 csrf: Csrf = "") -> Response:
    check_csrf(state, request, csrf)
    await run_in_threadpool(lambda: revoke_client(state.sessions, client_id=client_id))
    return back_to("/ui/clients")


@router.post("/clients/{client_id}/trust")
async def trust(request: Request, client_id: RowId, state: StateDep, caller: ConsoleAdmin,
                trusted: Annotated[bool, Form()], csrf: Csrf = "") -> Response:
    """Vouch for a key's feedback (the noise model takes it as known truth), or stop."""
    check_csrf(state, request, csrf)
    await run_in_threadpool(lambda: set_trusted(state.sessions, client_id=client_id, trusted=trusted))
    return back_to("/ui/clients")


def install(app: FastAPI) -> None:
    """The console's pages, its static files, and `/` sending people to it."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)
