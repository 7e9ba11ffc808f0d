"""Workers' heartbeats: each worker process upserts its row every poll; readers ask when the
newest one was seen.  Retention drops the rows of workers silent for a day, so restarts don't
pile up."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.db.session import rowcount
from app.db.tables import WorkerBeat, utcnow

FORGET_AFTER = timedelta(days=1)


def beat(session: Session, worker_id: str) -> None:
    """Record that `worker_id` is alive now."""
    now = utcnow()
    row = session.get(WorkerBeat, worker_id)
    if row is None:
        session.add(WorkerBeat(worker_id=worker_id, started_at=now, seen_at=now))
    else:
        row.seen_at = now


def forget_silent(session: Session, now: datetime | None = None) -> int:
    """Drop the rows of workers silent for FORGET_AFTER; how many went."""
    cutoff = (now or utcnow()) - FORGET_AFTER
    return rowcount(session.execute(delete(WorkerBeat).where(WorkerBeat.seen_at < cutoff))) or 0


def last_seen(session: Session) -> datetime | None:
    """When any worker last said it was alive; None if none ever did (or all were forgotten)."""
    return session.scalar(select(func.max(WorkerBeat.seen_at)))


def alive_since(session: Session, since: datetime) -> int:
    """How many workers were seen at or after `since`."""
    return int(session.scalar(select(func.count()).select_from(WorkerBeat).where(WorkerBeat.seen_at >= since)) or 0)
