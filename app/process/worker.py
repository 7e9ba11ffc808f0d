"""`flywheel worker`: schedules the run jobs; what they do lives in `app/runs/`.

Jobs (APScheduler, every `worker_poll_s`): the retrain policy enqueues a `schedule` run for a
task that is due (`runs.schedule`); the reaper fails a running run whose heartbeat is older
than `heartbeat_timeout_s` and requeues it once (`runs.lifecycle`).  Executing runs happens on
one runner thread, one run at a time, with a heartbeat thread beside it (`runs.execute`,
`runs.heartbeat`).  SQLite serialises every write, so run one worker there (the embedded one,
by default); on PostgreSQL any number can share the queue.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

import torch
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.db.session import make_engine, make_sessionmaker, transaction
from app.db.workers import beat as record_beat
from app.observability import worker_metrics
from app.runs.execute import execute_run
from app.runs.prepare import backfill_engines
from app.runs.heartbeat import Heartbeat, RunControl
from app.runs.lifecycle import claim_next, fail_overlong_runs, reap_stale_runs
from app.model.store import dir_bytes
from app.runs.retention import RetentionReport, apply_retention
from app.runs.schedule import schedule_due_runs

log = logging.getLogger(__name__)


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
        return schedule_due_runs(self.factory)

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
        worker_metrics.BUSY.set(1)
        try:
            return execute_run(self.settings, self.factory, run_id, worker_id=self.worker_id, control=control)
        finally:
            beat.stop()
            worker_metrics.BUSY.set(0)

    def beat(self) -> None:
        """Say this worker is alive (read by /metrics and the console: `worker_beats`)."""
        with transaction(self.factory) as s:
            record_beat(s, self.worker_id)

    def reap_stale_runs(self) -> list[int]:
        """Fail running runs whose worker went silent (requeued once) or that ran past the
        maximum run time (not requeued).  Returns the failed ids."""
        return (reap_stale_runs(self.factory, timeout_s=self.settings.heartbeat_timeout_s)
                + fail_overlong_runs(self.factory, max_run_s=self.settings.max_run_s))

    def backfill_engines(self) -> list[int]:
        """Prepare inference engines for active versions that have none (app/runs/prepare.py)."""
        if self.settings.engine == "torch":
            return []
        return backfill_engines(self.factory, self.settings)

    def apply_retention(self) -> RetentionReport:
        """Prune versions, old predictions and feedback, remove crash leftovers (app/runs/retention.py)."""
        s = self.settings
        report = apply_retention(self.factory, s.models_dir, keep_versions=s.keep_versions,
                                 rejected_days=s.rejected_retention_days, prediction_days=s.prediction_retention_days,
                                 feedback_days=s.feedback_retention_days)
        worker_metrics.STORE_BYTES.set(dir_bytes(s.models_dir))
        return report

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

    def _guarded(self, job: Callable[[], object]) -> None:
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
        for job in (self.beat, self.schedule_due_runs, self.reap_stale_runs, self.backfill_engines):
            self._scheduler.add_job(self._guarded, "interval", args=[job], seconds=every, id=job.__name__,
                                    max_instances=1, coalesce=True, next_run_time=datetime.now(timezone.utc))
        # Retention at start (crash leftovers first of all) and every retention_interval_s.
        self._scheduler.add_job(self._guarded, "interval", args=[self.apply_retention],
                                seconds=self.settings.retention_interval_s, id="apply_retention", max_instances=1,
                                coalesce=True, next_run_time=datetime.now(timezone.utc))
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
               metrics_port: int | None = None, parent_pid: int | None = None) -> None:
    """Run a worker until `stop_event` is set (or, with none given, until SIGTERM/SIGINT), or,
    with `parent_pid`, until that process stops being our parent (it exited, however it went)."""
    if stop_event is None:
        stop_event = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop_event.set())
    if metrics_port:
        worker_metrics.serve(metrics_port, settings.host)
    worker = Worker(settings)
    worker.start()
    try:
        while not stop_event.wait(1.0):
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("worker %s: parent process %d is gone; stopping", worker.worker_id, parent_pid)
                break
    finally:
        worker.stop()
