"""Dependencies: the app state and who is calling.

Hot paths (predict, feedback) resolve the caller without leaving the event loop when they
can: the admin token is compared in place, and a client key's lookup is remembered for a
moment (`app/services/clients.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request, Response

from app.api.problems import Problem
from app.services.clients import ADMIN, Caller, authenticate
from app.services.paging import DEFAULT_PAGE, MAX_PAGE, Page
from app.process.state import AppState


async def get_state(request: Request) -> AppState:
    # async on purpose: FastAPI runs a plain `def` dependency on its thread pool, a hop per request
    return request.app.state.flywheel


StateDep = Annotated[AppState, Depends(get_state)]


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", detail, field="Authorization",
                   headers={"WWW-Authenticate": "Bearer"})


async def get_caller(request: Request, state: StateDep) -> Caller:
    header = request.headers.get("authorization")
    admin_token = state.settings.admin_token
    if not header:
        if admin_token is None:
            return ADMIN  # dev mode: no token configured, the server only listens on loopback
        raise _unauthorized("Missing 'Authorization: Bearer <key>' header.")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("The Authorization header must be 'Bearer <key>'.")
    caller = await authenticate(state, token=token, address=request.client.host if request.client else "unknown")
    if caller is None:
        raise _unauthorized("Unknown or revoked API key.")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise Problem(403, "forbidden", "Forbidden", "This call needs the admin token.", field="Authorization")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]


# An id or version number in a path: a row id is a signed 64-bit integer in the database, and a
# driver refuses a larger Python int with an OverflowError (a 500); out of range is a 422 here.
RowId = Annotated[int, Path(ge=0, le=2**63 - 1, description="A non-negative 64-bit integer.")]

# A task's name in a path.  No name holds a NUL (PostgreSQL refuses one in any query): 422.
TaskName = Annotated[str, Path(pattern=r"^[^\x00]+$", description="The task's name.")]


def get_page(
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="Rows per page."),
    after: int | None = Query(None, ge=0, le=2**63 - 1, description="The cursor from the previous page's "
                                                                     "`Link: <…>; rel=\"next\"` header."),
) -> Page:
    return Page(limit=limit, after=after)


PageDep = Annotated[Page, Depends(get_page)]


def link_next(request: Request, response: Response, after: int | None) -> None:
    """Point at the next page (RFC 8288 `Link: <…>; rel="next"`) when there is one; the body
    stays a plain list."""
    if after is not None:
        url = request.url.include_query_params(after=after)
        response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
