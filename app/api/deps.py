"""Dependencies: the app state, a DB session, and who is calling."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.problems import Problem
from app.db.models import Client, Task
from app.security import hash_api_key, same_secret
from app.state import AppState


def get_state(request: Request) -> AppState:
    return request.app.state.flywheel


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Caller:
    is_admin: bool
    client_id: int | None
    name: str


ADMIN = Caller(is_admin=True, client_id=None, name="admin")


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", detail, field="Authorization",
                   headers={"WWW-Authenticate": "Bearer"})


def get_caller(request: Request, state: StateDep) -> Caller:
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
    if admin_token is not None and same_secret(token, admin_token):
        return ADMIN
    with state.sessions() as session:
        client = session.scalar(select(Client).where(Client.key_hash == hash_api_key(token)))
    if client is None or client.revoked_at is not None:
        raise _unauthorized("Unknown or revoked API key.")
    return Caller(is_admin=False, client_id=client.id, name=client.name)


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise Problem(403, "forbidden", "Forbidden", "This call needs the admin token.", field="Authorization")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]


def load_task(session: Session, name: str) -> Task:
    task = session.scalar(select(Task).where(Task.name == name))
    if task is None:
        raise Problem(404, "unknown-task", "Unknown task", f"No task named {name!r}.", field="task")
    return task
