"""Erasure records, and the lock that makes them hold across processes.

An erasure (app/services/users.py) and a commit of predictions or feedback for the same user
must not interleave: on PostgreSQL's READ COMMITTED, a commit that checked for an erasure
record before the erasure committed, and inserted after the erasure's DELETE ran, would leave a
row behind.  So both take a per-user lock first: the erasure an exclusive transaction-level
advisory lock on the user's hash, each commit a shared one (commits of one user never wait for
each other).  Whichever comes second sees the first one's committed rows in its next statement:
the erasure deletes the row, or the commit finds the erasure record and stores nothing.  SQLite
has one writer at a time: taking its write lock first gives the same order.

The record says "erased at T": a request accepted before T (plus `CLOCK_SKEW_S`, for API
processes whose clocks differ a little) stores nothing; one accepted later is a returning user,
stored as new data."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, func, select, text
from sqlalchemy.orm import Session

from app.db.session import is_postgres, rowcount
from app.db.tables import Erasure, utcnow

CLOCK_SKEW_S = 1.0  # how far API processes' clocks may disagree; a request this close after T is refused too
RECORD_TTL = timedelta(days=1)  # far longer than any request stays in flight; retention forgets older records


def _lock_key(user_hash: str) -> int:
    """A user hash (64 hex digits) as a PostgreSQL advisory lock key (a signed bigint)."""
    return int(user_hash[:15], 16)


def lock_users(db: Session | Connection, hashes: Iterable[str], *, exclusive: bool = False) -> None:
    """Hold these users until the transaction ends: shared for commits of their rows, exclusive
    for their erasure.  On SQLite, the database's write lock (taken even with no hashes, so the
    reads that follow see every committed write)."""
    bind = db.get_bind() if isinstance(db, Session) else db.engine
    if not is_postgres(bind):
        db.execute(delete(Erasure).where(Erasure.id.is_(None)))  # a write that matches nothing: the lock
        return
    keys = sorted({_lock_key(h) for h in hashes})
    if keys:
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        db.execute(text(f"SELECT {fn}(k) FROM unnest(CAST(:keys AS bigint[])) AS k"), {"keys": keys})


def record_erasure(session: Session, *, user_hash: str, client_id: int | None) -> datetime:
    """Write the record, under `lock_users(..., exclusive=True)`; its time."""
    erasure = Erasure(user_hash=user_hash, client_id=client_id, erased_at=utcnow())
    session.add(erasure)
    session.flush()
    return erasure.erased_at


def erased(db: Session | Connection, hashes: Iterable[str]) -> dict[str, datetime]:
    """The latest erasure of each of these users that has one, under `lock_users`."""
    wanted = set(hashes)
    if not wanted:
        return {}
    rows = db.execute(select(Erasure.user_hash, func.max(Erasure.erased_at))
                      .where(Erasure.user_hash.in_(wanted)).group_by(Erasure.user_hash))
    return {user_hash: at for user_hash, at in rows}


def refused(accepted_at: datetime, erased_at: datetime | None) -> bool:
    """Was this request accepted before its user's erasure took effect (so it must store nothing)?"""
    return erased_at is not None and accepted_at <= erased_at + timedelta(seconds=CLOCK_SKEW_S)


def forget_old_records(session: Session, now: datetime | None = None) -> int:
    """Delete records older than RECORD_TTL: no request accepted before them is still in flight."""
    cutoff = (now or utcnow()) - RECORD_TTL
    return rowcount(session.execute(delete(Erasure).where(Erasure.erased_at < cutoff)))
