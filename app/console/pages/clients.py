"""The admin's page of API keys: create one (its key shown once), revoke it, vouch for its feedback."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import RowId, StateDep
from app.console.deps import ConsoleAdmin, Csrf
from app.console.render import back_to, page_router, render
from app.console.session import check_csrf
from app.services import console as page_data
from app.services.clients import SCOPES, create_client, list_clients, revoke_client, set_trusted
from app.services.paging import Page

router = page_router()


@router.get("/clients")
async def clients_page(request: Request, state: StateDep, caller: ConsoleAdmin) -> Response:
    items, _ = await run_in_threadpool(list_clients, state, page=Page(limit=500))
    tasks = await run_in_threadpool(page_data.task_names, state)
    return render(request, state, "clients.html", {"clients": items, "tasks": tasks, "scopes": SCOPES,
                                                   "created": None}, caller=caller)


@router.post("/clients")
async def create(request: Request, state: StateDep, caller: ConsoleAdmin,
                 name: Annotated[str, Form(min_length=1, max_length=128)],
                 tasks: Annotated[list[str], Form()] = [],
                 scopes: Annotated[list[str], Form()] = [], csrf: Csrf = "") -> Response:
    check_csrf(state, request, csrf)
    client, key = await run_in_threadpool(create_client, state, name=name, tasks=tasks, scopes=scopes)
    items, _ = await run_in_threadpool(list_clients, state, page=Page(limit=500))
    names = await run_in_threadpool(page_data.task_names, state)
    return render(request, state, "clients.html", {"clients": items, "tasks": names, "scopes": SCOPES,
                                                   "created": {**client, "key": key}}, caller=caller,
                  status_code=201)


@router.post("/clients/{client_id}/revoke")
async def revoke(request: Request, client_id: RowId, state: StateDep, caller: ConsoleAdmin,
                 csrf: Csrf = "") -> Response:
    check_csrf(state, request, csrf)
    await run_in_threadpool(revoke_client, state, client_id=client_id)
    return back_to("/ui/clients")


@router.post("/clients/{client_id}/trust")
async def trust(request: Request, client_id: RowId, state: StateDep, caller: ConsoleAdmin,
                trusted: Annotated[bool, Form()], csrf: Csrf = "") -> Response:
    """Vouch for a key's feedback (the noise model takes it as known truth), or stop."""
    check_csrf(state, request, csrf)
    await run_in_threadpool(set_trusted, state, client_id=client_id, trusted=trusted)
    return back_to("/ui/clients")
