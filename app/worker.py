"""`flywheel worker`: the retrain policy, the run queue, heartbeats and the reaper.

The database is the queue.  A worker claims the oldest queued run with
`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, so any number of workers can share one
database and never claim the same run; the claim's UPDATE is also guarded by
`status = 'queued'`, which keeps it exclusive on SQLite too, but SQLite serialises every
write, so run one worker there (the embedded one, by default).

Jobs (APScheduler, every `worker_poll_s`): the retrain policy enqueues a `schedule` run for a
task that is due; the reaper fails a running run whose heartbeat is older than
`heartbeat_timeout_s` and requeues it once as a new run (trigger `requeue`, the attempts count
carried over; the failed row keeps its history and says which run replaced it).  Executing
runs happens on one runner thread, one run at a time, with a heartbeat thread beside it.
Clocks: heartbeats are stamped by each worker's clock, so keep workers' clocks in sync (NTP).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from datetime import datetime, timedelta, timezone

import torch
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db.models import ModelVersion, Task, TrainingRun, utcnow
from app.db.session import is_postgres, make_engine, make_sessionmaker, transaction
from app.learning import metrics
from app.learning.data import new_signals_since
from app.learning.policy import Policy
from app.learning.runs import OPEN_STATUSES, RunControl, enqueue_run, execute_run

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # the first try and one requeue after a lost worker


def _aware(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes; every timestamp here is written in UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------- retrain policy


def retrain_due(session: Session, task: Task, now: datetime | None = None) -> str | None:
    """Why `task` should retrain now, or None.

    Due when no run is open, at least `min_interval_s` has passed since the last run, and
    either `min_new_signals` feedback rows and examples arrived since the last judged
    (promoted or rejected) run, or `max_interval_s` has passed with anything new at all.
    """
    now = now or utcnow()
    policy = Policy.from_dict(task.policy)
    runs = select(TrainingRun).where(TrainingRun.task_id == task.id).order_by(TrainingRun.id.desc()).limit(1)
    if session.scalar(select(func.count()).select_from(TrainingRun)
                      .where(TrainingRun.task_id == task.id, TrainingRun.status.in_(OPEN_STATUSES))):
        return None
    last = session.scalar(runs)
    judged = session.scalar(runs.where(TrainingRun.status.in_(("promoted", "rejected"))))
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


# ---------------------------------------------------------------- claiming


def claim_next(session: Session, worker_id: str) -> int | None:
    """Take the oldest queued run for this worker; its id, or None if there is none to take."""
    query = select(TrainingRun.id).where(TrainingRun.status == "queued").order_by(TrainingRun.id).limit(1)
    if is_postgres(session.get_bind()):
        query = query.with_for_update(skip_locked=True)
    run_id = session.scalar(query)
    if run_id is None:
        return None
    now = utcnow()
    res = session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.status == "queued")
        .values(status="running", worker_id=worker_id, started_at=now, heartbeat_at=now,
                attempts=TrainingRun.attempts + 1, error=None)
    )
    return run_id if res.rowcount == 1 else None


class Heartbeat(threading.Thread):
    """Stamps the run's heartbeat every `interval`; sets `lost` once the run is no longer ours."""

    def __init__(self, factory: sessionmaker[Session], run_id: int, worker_id: str, interval: float,
                 lost: threading.Event) -> None:
        super().__init__(name=f"heartbeat-{run_id}", daemon=True)
        self.factory, self.run_id, self.worker_id, self.interval, self.lost = factory, run_id, worker_id, interval, lost
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                with transaction(self.factory) as s:
                    res = s.execute(
                        update(TrainingRun)
                        .where(TrainingRun.id == self.run_id, TrainingRun.status == "running",
                               TrainingRun.worker_id == self.worker_id)
                        .values(heartbeat_at=utcnow())
                    )
                if res.rowcount == 0:
                    self.lost.set()
                    return
            except Exception:  # a DB blip: the next beat tries again; the reaper's timeout is the judge
                log.warning("heartbeat for run %s failed", self.run_id, exc_info=True)

    def stop(self) -> None:
        self._done.set()
        self.join()


# ---------------------------------------------------------------- the worker


class Worker:
    """One worker process's jobs.  `start()`/`stop()` run them in the background; the job
    methods (`schedule_due_runs`, `run_once`, `reap_stale_runs`) can also be called directly."""

    def __init__(self, settings: Settings, *, worker_id: str | None = None,
                 factory: sessionmaker[Session] | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.factory = factory or make_sessionmaker(make_engine(settings.db_url))
        self.stop_event = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        self._runner: threading.Thread | None = None

    # -- jobs

    def schedule_due_runs(self) -> list[int]:
        """Enqueue a `schedule` run for every task the retrain policy says is due."""
        created: list[int] = []
        with self.factory() as s:
            task_ids = list(s.scalars(select(Task.id).order_by(Task.id)))
        for task_id in task_ids:
            with transaction(self.factory) as s:
                task = s.get(Task, task_id)
                reason = retrain_due(s, task) if task is not None else None
                if reason is None:
                    continue
                run, new = enqueue_run(s, task, trigger="schedule")
                if new:
                    created.append(run.id)
                    log.info("task %s: queued run %s (%s)", task.name, run.id, reason)
        return created

    def run_once(self) -> str | None:
        """Claim one queued run and execute it here; its final status, or None if none was queued."""
        with transaction(self.factory) as s:
            run_id = claim_next(s, self.worker_id)
        if run_id is None:
            return None
        log.info("worker %s claimed run %s", self.worker_id, run_id)
        control = RunControl(stop=self.stop_event)
        beat = Heartbeat(self.factory, run_id, self.worker_id, self.settings.heartbeat_s, control.lost)
        beat.start()
        metrics.BUSY.set(1)
        try:
            return execute_run(self.settings, self.factory, run_id, worker_id=self.worker_id, control=control)
        finally:
            beat.stop()
            metrics.BUSY.set(0)

    def reap_stale_runs(self) -> list[int]:
        """Fail running runs whose worker went silent; requeue each once.  Returns the failed ids."""
        now = utcnow()
        cutoff = now - timedelta(seconds=self.settings.heartbeat_timeout_s)
        reaped: list[int] = []
        with transaction(self.factory) as s:
            query = select(TrainingRun).where(
                TrainingRun.status == "running",
                or_(TrainingRun.heartbeat_at < cutoff,
                    and_(TrainingRun.heartbeat_at.is_(None), TrainingRun.started_at < cutoff)),
            ).order_by(TrainingRun.id)
            if is_postgres(s.get_bind()):
                query = query.with_for_update(skip_locked=True)
            for run in s.scalars(query).all():
                beat = run.heartbeat_at or run.started_at
                run.status, run.finished_at = "failed", now
                run.error = f"worker {run.worker_id} stopped heartbeating (last beat {beat:%Y-%m-%d %H:%M:%S} UTC)"
                if run.candidate_version_id is not None:
                    s.execute(update(ModelVersion)
                              .where(ModelVersion.id == run.candidate_version_id, ModelVersion.status == "candidate")
                              .values(status="rejected", reason="its run's worker went silent"))
                s.flush()
                if run.attempts < MAX_ATTEMPTS:
                    again, created = enqueue_run(s, s.get(Task, run.task_id), trigger="requeue")
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
                metrics.REAPED.labels(task_name).inc()
                log.warning("run %s: %s", run.id, run.error)
        return reaped

    # -- lifecycle

    def _run_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                status = self.run_once()
            except Exception:
                log.exception("worker %s: claiming or running failed", self.worker_id)
                status = None
            if status is None:
                self.stop_event.wait(self.settings.worker_poll_s)

    def _guarded(self, job) -> None:  # noqa: ANN001
        try:
            job()
        except Exception:
            log.exception("worker %s: job %s failed", self.worker_id, job.__name__)

    def start(self) -> None:
        """Start the policy and reaper jobs and the runner thread; returns at once."""
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        self.stop_event.clear()
        every = self.settings.worker_poll_s
        self._scheduler = BackgroundScheduler(timezone=timezone.utc)
        for job in (self.schedule_due_runs, self.reap_stale_runs):
            self._scheduler.add_job(self._guarded, "interval", args=[job], seconds=every, id=job.__name__,
                                    max_instances=1, coalesce=True, next_run_time=datetime.now(timezone.utc))
        self._scheduler.start()
        self._runner = threading.Thread(target=self._run_loop, name="flywheel-runner", daemon=True)
        self._runner.start()
        log.info("worker %s started (poll %.1fs, heartbeat %.1fs, timeout %.1fs)", self.worker_id, every,
                 self.settings.heartbeat_s, self.settings.heartbeat_timeout_s)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the jobs; a run in progress is interrupted at its next step and requeued."""
        self.stop_event.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self._runner is not None:
            self._runner.join(timeout)
            self._runner = None
        log.info("worker %s stopped", self.worker_id)


def run_worker(settings: Settings, stop_event: threading.Event | None = None, *,
               metrics_port: int | None = None) -> None:
    """Run a worker until `stop_event` is set (or, with none given, until SIGTERM/SIGINT)."""
    if stop_event is None:
        stop_event = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop_event.set())
    if metrics_port:
        metrics.serve(metrics_port, settings.host)
    worker = Worker(settings)
    worker.start()
    try:
        while not stop_event.wait(1.0):
            pass
    finally:
        worker.stop()
