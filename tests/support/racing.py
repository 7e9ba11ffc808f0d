"""Driving a race in a fixed order: one party is paused at the racing point (a hook), the other
runs `beside` it in a thread until it has either finished or is waiting for a lock the paused
one holds, and only then does the paused one go on.

On PostgreSQL the other party's connections (`impatient`) are seen waiting in pg_stat_activity.
On SQLite the other party uses
`impatient` sessions, which fail at once ("database is locked") instead of waiting for the write
lock, so it always finishes: either it got through (nothing held it) or it was refused."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.db.session import make_sessionmaker
from app.observability.metrics import Metrics
from app.process.state import AppState
from app.serving.registry import ServedModels
from support.waiting import wait_until

GIVE_UP_S = 60.0
APP_NAME = "flywheel-racing"  # the racing party's PostgreSQL connections, to see them wait


def impatient(db_url: str) -> sessionmaker[Session]:
    """Sessions for the racing party: on SQLite they never wait for the write lock; on PostgreSQL
    they wait as usual, named so `beside` can see them waiting."""
    if not db_url.startswith("sqlite"):
        return make_sessionmaker(create_engine(db_url, connect_args={"application_name": APP_NAME}))
    engine = create_engine(db_url, connect_args={"check_same_thread": False, "timeout": 0})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    return make_sessionmaker(engine)


def impatient_state(db_url: str, settings: Settings) -> AppState:
    """What a service function takes (app/services/__init__.py), over `impatient` sessions: the
    racing party calls a service as an API process would."""
    sessions = impatient(db_url)
    return AppState(settings=settings, engine=sessions.kw["bind"], sessions=sessions,
                    served=ServedModels(sessions, device=settings.device), metrics=Metrics())


class Beside:
    """`fn()` running in a thread; `outcome()` is its result, or the exception it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._result: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._result.append(fn())
        except Exception as exc:
            self._result.append(exc)

    def done(self) -> bool:
        return not self._thread.is_alive()

    def outcome(self) -> Any:
        self._thread.join(GIVE_UP_S)
        assert not self._thread.is_alive(), "the racing party never finished"
        return self._result[0]


def _waiting_on_a_lock(db_url: str) -> bool:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return bool(conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                         "AND application_name = :app AND wait_event_type = 'Lock'"),
                                    {"app": APP_NAME}))
    finally:
        engine.dispose()


def beside(db_url: str, fn: Callable[[], Any]) -> Beside:
    """Start `fn` in a thread and return once it has finished or (PostgreSQL) waits for a lock."""
    other = Beside(fn)
    if db_url.startswith("sqlite"):
        wait_until(other.done, GIVE_UP_S, "the racing party (it never waits on SQLite)")
    else:
        wait_until(lambda: other.done() or _waiting_on_a_lock(db_url), GIVE_UP_S,
                   "the racing party to finish or wait for a lock")
    return other
