"""Dependencies: the app state, a DB session, and who is calling.

Hot paths (predict, feedback) resolve the caller without leaving the event loop when they
can: the admin token is compared in place, and a client key's lookup is remembered for
`KEY_CACHE_TTL_S` seconds.  A revocation made through the ORM in this process forgets the
key at once; other API processes honour it within the TTL.  Their database work runs on a
small dedicated thread pool (`in_db_thread`), so a burst of requests does not turn into dozens
of threads fighting over the GIL and over more connections than the pool keeps open.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from app.api.problems import Problem
from app.db.models import Client, Task
from app.security import hash_api_key, same_secret
from app.state import AppState


async def get_state(request: Request) -> AppState:
    # async on purpose: FastAPI runs a plain `def` dependency on its thread pool, a hop per request
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


T = TypeVar("T")

DB_THREADS = 4  # enough to overlap round trips; fewer than the connection pool keeps open
_db_pool: ThreadPoolExecutor | None = None
_db_pool_lock = threading.Lock()


async def in_db_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking database work off the event loop, on the small shared DB pool."""
    global _db_pool
    if _db_pool is None:
        with _db_pool_lock:
            if _db_pool is None:
                _db_pool = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="db")
    call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
    return await asyncio.get_running_loop().run_in_executor(_db_pool, call)


KEY_CACHE_TTL_S = 2.0
KEY_CACHE_MAX = 10_000
# key hash -> (expires at, id of the app's sessionmaker, caller); only known, live keys
_key_cache: dict[str, tuple[float, int, Caller]] = {}


@event.listens_for(Client.revoked_at, "set")
def _forget_revoked_key(target: Client, value: Any, oldvalue: Any, initiator: Any) -> None:
    if target.key_hash is not None:
        _key_cache.pop(target.key_hash, None)


def _lookup_client(sessions: sessionmaker[Session], key_hash: str) -> Caller | None:
    with sessions() as session:
        row = session.execute(
            select(Client.id, Client.name, Client.revoked_at).where(Client.key_hash == key_hash)
        ).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return Caller(is_admin=False, client_id=row.id, name=row.name)


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
    if admin_token is not None and same_secret(token, admin_token):
        return ADMIN
    key_hash = hash_api_key(token)
    now = time.monotonic()
    hit = _key_cache.get(key_hash)
    if hit is not None and hit[0] > now and hit[1] == id(state.sessions):
        return hit[2]
    caller = await in_db_thread(_lookup_client, state.sessions, key_hash)
    if caller is None:
        _key_cache.pop(key_hash, None)
        raise _unauthorized("Unknown or revoked API key.")
    if len(_key_cache) >= KEY_CACHE_MAX:
        _key_cache.clear()
    _key_cache[key_hash] = (now + KEY_CACHE_TTL_S, id(state.sessions), caller)
    return caller


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
