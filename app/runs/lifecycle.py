"""A run's life in the database: queued -> running -> promoted | rejected | failed.

The database is the queue.  A worker claims the oldest queued run with
`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, so any number of workers can share one
database and never claim the same run; the claim's UPDATE is also guarded by
`status = 'queued'`, which keeps it exclusive on SQLite too.  Every later write checks that
the run is still running under the same worker (`owned`), so a run the reaper has taken away
is never promoted late.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.paging import Page, cut, paged
from app.db.session import is_postgres, rowcount, transaction
from app.db.tables import ModelVersion, Task, TrainingRun, utcnow
from app.db.versions import lock_task, path_in_use
from app.core.errors import Conflict, NotFound
from app.observability import worker_metrics
from app.core.statuses import OPEN_RUN_STATUSES, RunStatus, Trigger, VersionStatus

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # the first try and one requeue after a lost worker


class RunAbandoned(Exception):
    """The run is no longer this worker's (the reaper failed it after a lost heartbeat)."""


# ---------------------------------------------------------------- enqueue


def open_run(session: Session, task_id: int) -> TrainingRun | None:
    return session.scalar(
        select(TrainingRun).where(TrainingRun.task_id == task_id, TrainingRun.status.in_(OPEN_RUN_STATUSES))
        .order_by(TrainingRun.id).limit(1)
    )


def enqueue_run(session: Session, task: Task, trigger: Trigger = Trigger.ADMIN) -> tuple[TrainingRun, bool]:
    """Queue a run for `task`, or return the one already queued or running: (run, created).

    Race-safe: the task row is locked before the check, so two callers cannot both create.
    Runs inside the caller's transaction; the caller commits.
    """
    lock_task(session, task.id)
    existing = open_run(session, task.id)
    if existing is not None:
        return existing, False
    run = TrainingRun(task_id=task.id, status=RunStatus.QUEUED, trigger=trigger)
    session.add(run)
    session.flush()
    return run, True


def request_run(sessions: sessionmaker[Session], *, task: Task | str, trigger: Trigger = Trigger.ADMIN
                ) -> TrainingRun:
    """Queue a run for a task by name; Conflict (naming the open run) if one is queued or running."""
    with transaction(sessions) as s:
        row = s.scalar(select(Task).where(Task.name == task)) if isinstance(task, str) else s.get(Task, task.id)
        if row is None:
            raise NotFound.of("task", task, field="task", detail=f"No task named {task!r}.")
        run, created = enqueue_run(s, row, trigger=trigger)
    if not created:
        raise Conflict(f"Run {run.id} for task {row.name!r} is {run.status}; wait for it or follow it.",
                       field="task", slug="run-in-progress", title="Run already open", run_id=run.id,
                       run_status=str(run.status))
    return run


# ---------------------------------------------------------------- claim and own


def claim_next(session: Session, worker_id: str) -> int | None:
    """Take the oldest queued run for this worker; its id, or None if there is none to take."""
    query = select(TrainingRun.id).where(TrainingRun.status == RunStatus.QUEUED).order_by(TrainingRun.id).limit(1)
    if is_postgres(session.get_bind()):
        query = query.with_for_update(skip_locked=True)
    run_id = session.scalar(query)
    if run_id is None:
        return None
    now = utcnow()
    res = session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.QUEUED)
        .values(status=RunStatus.RUNNING, worker_id=worker_id, started_at=now, heartbeat_at=now,
                attempts=TrainingRun.attempts + 1, error=None)
    )
    return run_id if rowcount(res) == 1 else None


def owned(session: Session, run_id: int, worker_id: str) -> TrainingRun:
    """The run, row-locked, if it is still running under this worker; else RunAbandoned."""
    run = session.scalar(select(TrainingRun).where(TrainingRun.id == run_id).with_for_update())
    if run is None or run.status != RunStatus.RUNNING or run.worker_id != worker_id:
        raise RunAbandoned(f"run {run_id} is no longer running under {worker_id}")
    return run


def update_owned(factory: sessionmaker[Session], run_id: int, worker_id: str, **values: Any) -> bool:
    """Write `values` to the run if it is still this worker's; False if it is not."""
    with transaction(factory) as s:
        res = s.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.RUNNING,
                   TrainingRun.worker_id == worker_id)
            .values(**values)
        )
        return rowcount(res) == 1


# ---------------------------------------------------------------- endings other than the verdict


def release_interrupted(factory: sessionmaker[Session], run_id: int, worker_id: str) -> bool:
    """A shutdown interrupted the run: back to `queued` for any worker (not the run's fault, so
    the attempt is not counted).  False if the run was no longer this worker's."""
    with transaction(factory) as s:
        try:
            run = owned(s, run_id, worker_id)
        except RunAbandoned:
            return False
        run.status, run.worker_id, run.started_at, run.heartbeat_at = RunStatus.QUEUED, None, None, None
        run.attempts = max(run.attempts - 1, 0)
        run.progress, run.loss_curve, run.error = {}, [], "interrupted by worker shutdown; requeued"
    return True


def fail_owned(factory: sessionmaker[Session], run_id: int, worker_id: str, *, error: str,
               duration_s: float) -> bool:
    """The run failed here; its error is kept for the admin.  False if it was no longer ours."""
    with transaction(factory) as s:
        try:
            run = owned(s, run_id, worker_id)
        except RunAbandoned:
            return False
        run.status, run.error, run.finished_at, run.duration_s = RunStatus.FAILED, error[:4000], utcnow(), duration_s
    return True


def drop_candidate(factory: sessionmaker[Session], version_id: int | None, path: Path | None, reason: str) -> None:
    """A candidate whose run did not finish: rejected if registered, its files removed if not."""
    if version_id is not None:
        with transaction(factory) as s:
            s.execute(update(ModelVersion)
                      .where(ModelVersion.id == version_id, ModelVersion.status == VersionStatus.CANDIDATE)
                      .values(status=VersionStatus.REJECTED, reason=reason))
    elif path is not None:
        with factory() as s:
            referenced = path_in_use(s, path)
        if not referenced:
            shutil.rmtree(path, ignore_errors=True)


def reap_stale_runs(factory: sessionmaker[Session], *, timeout_s: float, now: datetime | None = None) -> list[int]:
    """Fail running runs whose worker went silent for `timeout_s`; requeue each once as a new run
    (trigger `requeue`, the attempts count carried over; the failed row keeps its history and
    says which run replaced it).  Returns the failed ids."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=timeout_s)
    reaped: list[int] = []
    with transaction(factory) as s:
        query = select(TrainingRun).where(
            TrainingRun.status == RunStatus.RUNNING,
            or_(TrainingRun.heartbeat_at < cutoff,
                and_(TrainingRun.heartbeat_at.is_(None), TrainingRun.started_at < cutoff)),
        ).order_by(TrainingRun.id)
        if is_postgres(s.get_bind()):
            query = query.with_for_update(skip_locked=True)
        for run in s.scalars(query).all():
            beat = run.heartbeat_at or run.started_at
            run.status, run.finished_at = RunStatus.FAILED, now
            run.error = f"worker {run.worker_id} stopped heartbeating (last beat {beat:%Y-%m-%d %H:%M:%S} UTC)"
            if run.candidate_version_id is not None:
                s.execute(update(ModelVersion)
                          .where(ModelVersion.id == run.candidate_version_id,
                                 ModelVersion.status == VersionStatus.CANDIDATE)
                          .values(status=VersionStatus.REJECTED, reason="its run's worker went silent"))
            s.flush()
            if run.attempts < MAX_ATTEMPTS:
                again, created = enqueue_run(s, s.get_one(Task, run.task_id), trigger=Trigger.REQUEUE)
                if created:
                    again.attempts = run.attempts
                    again.requeued_from = run.id
                    run.error += f"; requeued as run {again.id}"
                else:
                    run.error += f"; not requeued: run {again.id} is already open"
            else:
                run.error += f"; not requeued: {run.attempts} attempts made"
            reaped.append(run.id)
            task_name = s.scalar(select(Task.name).where(Task.id == run.task_id))
            worker_metrics.REAPED.labels(task_name).inc()
            log.warning("run %s: %s", run.id, run.error)
    return reaped


def fail_overlong_runs(factory: sessionmaker[Session], *, max_run_s: float, now: datetime | None = None) -> list[int]:
    """Fail running runs started more than `max_run_s` ago, heartbeat or not: a run that hangs
    (its heartbeat thread still beating) must not hold its task's one open run forever.  Not
    requeued: what hung once would hang again.  Its worker finds the run taken away at its next
    heartbeat and stops at its next step.  Returns the failed ids."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=max_run_s)
    failed: list[int] = []
    with transaction(factory) as s:
        query = (select(TrainingRun)
                 .where(TrainingRun.status == RunStatus.RUNNING, TrainingRun.started_at < cutoff)
                 .order_by(TrainingRun.id))
        if is_postgres(s.get_bind()):
            query = query.with_for_update(skip_locked=True)
        for run in s.scalars(query).all():
            run.status, run.finished_at = RunStatus.FAILED, now
            run.error = (f"ran longer than the maximum run time ({max_run_s:g}s, FLYWHEEL_MAX_RUN_S) on worker "
                         f"{run.worker_id}; not requeued")
            if run.candidate_version_id is not None:
                s.execute(update(ModelVersion)
                          .where(ModelVersion.id == run.candidate_version_id,
                                 ModelVersion.status == VersionStatus.CANDIDATE)
                          .values(status=VersionStatus.REJECTED, reason="its run ran past the maximum run time"))
            failed.append(run.id)
            log.warning("run %s: %s", run.id, run.error)
    return failed


def cancel_run(factory: sessionmaker[Session], *, run_id: int) -> TrainingRun:
    """End an open run now, as `failed` with the reason "cancelled".  A queued run never starts; a
    running one is taken from its worker, which notices at its next heartbeat or progress write,
    stops, and drops its candidate (as for a lost heartbeat).  Conflict if the run has ended."""
    with transaction(factory) as s:
        run = s.scalar(select(TrainingRun).where(TrainingRun.id == run_id).with_for_update())
        if run is None:
            raise NotFound(f"No training run with id {run_id}.", field="run_id", slug="unknown-run",
                           title="Unknown run")
        if run.status not in OPEN_RUN_STATUSES:
            raise Conflict(f"Run {run_id} has already ended ({run.status}); there is nothing to cancel.",
                           field="run_id", slug="run-ended", title="Run already ended", run_status=str(run.status))
        was = run.status
        run.status, run.finished_at = RunStatus.FAILED, utcnow()
        run.error = f"cancelled while {was}" + (f" on worker {run.worker_id}" if run.worker_id else "")
        if run.candidate_version_id is not None:
            s.execute(update(ModelVersion)
                      .where(ModelVersion.id == run.candidate_version_id,
                             ModelVersion.status == VersionStatus.CANDIDATE)
                      .values(status=VersionStatus.REJECTED, reason="its run was cancelled"))
    log.info("run %s cancelled (was %s)", run_id, was)
    return run


# ---------------------------------------------------------------- reading runs


def get_run(session: Session, run_id: int) -> tuple[TrainingRun, str]:
    """The run and its task's name; NotFound if there is no such run."""
    row = session.execute(select(TrainingRun, Task.name).join(Task, Task.id == TrainingRun.task_id)
                          .where(TrainingRun.id == run_id)).one_or_none()
    if row is None:
        raise NotFound(f"No training run with id {run_id}.", field="run_id", slug="unknown-run",
                       title="Unknown run")
    return row[0], row[1]


def list_runs(session: Session, task_id: int, page: Page = Page()) -> tuple[list[TrainingRun], int | None]:
    """A page of the task's runs, newest first, and the next page's cursor."""
    rows = session.scalars(paged(select(TrainingRun).where(TrainingRun.task_id == task_id), TrainingRun.id, page,
                                 descending=True)).all()
    return cut(rows, page, lambda r: r.id)
