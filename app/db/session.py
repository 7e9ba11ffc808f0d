"""Engine and sessions.  Sync SQLAlchemy: routes run it in FastAPI's threadpool."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Unpack, cast

from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.orm import Session, sessionmaker


# What a database that is down, restarting or unreachable raises: answered 503 + Retry-After,
# never 500.  (SQLite's "database is locked" is an OperationalError too: busy, so also retryable.)
OUTAGE_ERRORS: tuple[type[Exception], ...] = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError,
                                              exc.DisconnectionError)


def make_engine(url: str, *, pool_size: int = 10, durable: bool = True) -> Engine:
    """An engine that never writes SQL parameters (texts, user hashes) into an error's message,
    so neither logs nor a run's stored error can leak them.

    On SQLite, `durable` (the default) syncs the write-ahead log at every commit
    (`synchronous=FULL`): a 2xx survives a power cut, not only a crash.  `durable=False`
    (`NORMAL`) is for benchmarks that measure what that costs (scripts/durability.py)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)

        synchronous = "FULL" if durable else "NORMAL"

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # pre-ping: a connection that died while the server was down is replaced, not handed out, so the
    # service recovers by itself when PostgreSQL returns; short timeouts so an outage answers fast.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=True, pool_timeout=10,
                         connect_args={"connect_timeout": 5}, hide_parameters=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed on success, rolled back on any error."""
    with factory() as session, session.begin():
        yield session


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def rowcount(result: Result[Unpack[tuple[Any, ...]]]) -> int:
    """How many rows an UPDATE or DELETE touched.  `Session.execute` is typed to return a plain
    `Result`, but for DML without RETURNING it is a `CursorResult`, which carries the count."""
    return cast(CursorResult[Unpack[tuple[Any, ...]]], result).rowcount


@contextmanager
def scratch_postgres_database(admin_url: str, prefix: str = "flywheel_scratch") -> Iterator[str]:
    """CREATE a uniquely named database on `admin_url`'s server, yield its URL, DROP it after.

    For tests and benchmarks that need a clean PostgreSQL database of their own."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
