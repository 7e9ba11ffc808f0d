"""Apply Alembic migrations from code: on start-up and by `flywheel migrate`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, pool, text
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
LOCK_KEY = 7_461_727  # pg advisory lock id: replicas starting together migrate one at a time


class MigrationFailed(RuntimeError):
    """A migration would have left the database inconsistent; nothing of it was committed."""


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _to_head(cfg: Config, conn: Connection) -> None:
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def upgrade(engine: Engine) -> None:
    """Migrate the database `engine` points at to the newest revision, in one transaction."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        _upgrade_sqlite(cfg, engine)
        return
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        _to_head(cfg, conn)


def _upgrade_sqlite(cfg: Config, engine: Engine) -> None:
    """SQLite's procedure for changing a table's schema (https://www.sqlite.org/lang_altertable.html):
    foreign keys off, the whole migration in one transaction, `PRAGMA foreign_key_check`, commit.

    Alembic's batch mode copies a table, drops the old one and renames the copy.  With foreign
    keys on (as the application's connections have them), dropping `model_versions` fails and
    dropping `predictions` would cascade to every feedback row.  So the migration gets a connection
    of its own: foreign keys off (settable only outside a transaction), and an explicit
    `BEGIN IMMEDIATE` (the driver would otherwise leave DDL outside the transaction, and
    IMMEDIATE makes a second process wait for the first instead of both migrating)."""
    migrating = create_engine(engine.url, poolclass=pool.NullPool, connect_args={"timeout": 60})

    @event.listens_for(migrating, "connect")
    def _no_foreign_keys(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # the driver begins nothing by itself: we do, below
        dbapi_conn.execute("PRAGMA busy_timeout=60000")
        # WAL before the transaction: another process that connects meanwhile (the embedded worker
        # at start) sets WAL too, which needs an exclusive lock SQLite will not wait for while this
        # transaction holds its write lock ("database is locked"); already WAL, it needs none.
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA foreign_keys=OFF")

    @event.listens_for(migrating, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with migrating.begin() as conn:
            _to_head(cfg, conn)
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise MigrationFailed(
                    f"the migration would leave {len(broken)} row(s) pointing at rows that do not exist "
                    f"(first: table {broken[0][0]}, rowid {broken[0][1]}, refers to {broken[0][2]}); "
                    "nothing was changed")
    finally:
        migrating.dispose()
