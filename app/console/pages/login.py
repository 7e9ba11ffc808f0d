"""Logging in (with the admin token or a client key) and out of the console."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Form, Request, Response

from app.api.deps import StateDep
from app.console.deps import Csrf
from app.console.render import back_to, page_router, render
from app.console.session import check_csrf, end_session, start_session
from app.services.clients import authenticate

router = page_router()


@router.get("/login")
def login_page(request: Request, state: StateDep, next: str = "/ui") -> Response:
    return render(request, state, "login.html", {"next": next, "error": None}, caller=None)


def _local(path: str) -> str:
    """Only a path on this server: never redirect a login elsewhere."""
    parts = urlsplit(path)
    return path if path.startswith("/ui") and not parts.netloc and not parts.scheme else "/ui"


@router.post("/login")
async def login(request: Request, state: StateDep, token: Annotated[str, Form(max_length=512)] = "",
                next: Annotated[str, Form(max_length=2048)] = "/ui", csrf: Csrf = "") -> Response:
    check_csrf(state, request, csrf)
    address = request.client.host if request.client else "unknown"
    caller = await authenticate(state, token=token.strip(), address=address) if token.strip() else None
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
