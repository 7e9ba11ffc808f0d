"""The retrain policy: when a task is due for a run, and queueing the runs that are due."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.session import transaction
from app.db.tables import Task, TrainingRun, utcnow
from app.db.training_rows import new_signals_since
from app.core.policy import Policy
from app.runs.lifecycle import enqueue_run
from app.core.statuses import JUDGED_RUN_STATUSES, OPEN_RUN_STATUSES, Trigger

log = logging.getLogger(__name__)


def _aware(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes; every timestamp here is written in UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def retrain_due(session: Session, task: Task, now: datetime | None = None) -> str | None:
    """Why `task` should retrain now, or None.

    Due when no run is open, at least `min_interval_s` has passed since the last run, and
    either `min_new_signals` feedback rows and examples arrived since the last judged
    (promoted or rejected) run, or `max_interval_s` has passed with anything new at all.
    """
    now = now or utcnow()
    policy = Policy.from_stored(task.policy)
    runs = select(TrainingRun).where(TrainingRun.task_id == task.id).order_by(TrainingRun.id.desc()).limit(1)
    if session.scalar(select(func.count()).select_from(TrainingRun)
                      .where(TrainingRun.task_id == task.id, TrainingRun.status.in_(OPEN_RUN_STATUSES))):
        return None
    last = session.scalar(runs)
    judged = session.scalar(runs.where(TrainingRun.status.in_(JUDGED_RUN_STATUSES)))
    new = new_signals_since(session, task.id, judged.watermark if judged else None)
    if new == 0:
        return None
    if last is not None and (now - _aware(last.created_at)).total_seconds() < policy.min_interval_s:
        return None
    if new >= policy.min_new_signals:
        return f"{new} new signals (>= {policy.min_new_signals})"
    since = _aware(last.created_at if last is not None else task.created_at)
    if policy.max_interval_s is not None and (now - since).total_seconds() >= policy.max_interval_s:
        return f"{new} new signals and {policy.max_interval_s:g}s since the last run"
    return None


def schedule_due_runs(factory: sessionmaker[Session]) -> list[int]:
    """Enqueue a `schedule` run for every task the retrain policy says is due; the new run ids."""
    created: list[int] = []
    with factory() as s:
        task_ids = list(s.scalars(select(Task.id).order_by(Task.id)))
    for task_id in task_ids:
        with transaction(factory) as s:
            task = s.get(Task, task_id)
            if task is None:
                continue
            reason = retrain_due(s, task)
            if reason is None:
                continue
            run, new = enqueue_run(s, task, trigger=Trigger.SCHEDULE)
            if new:
                created.append(run.id)
                log.info("task %s: queued run %s (%s)", task.name, run.id, reason)
    return created
