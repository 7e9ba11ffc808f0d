"""Training runs: enqueue one, and execute a claimed one end to end.

A run moves queued -> running -> promoted | rejected | failed.  Executing it: load the active
version, build the dataset, score the active on the validation rows, train, save the candidate
(atomic, content-hashed), register it as a `candidate` child of the active, score it, then in
one transaction either promote it (the old active retires) or reject it with the reason.  Any
error fails the run with its text and leaves the active version alone.  Every write checks the
run is still this worker's, so a run the reaper has taken away is never promoted late.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db.models import ModelVersion, Task, TrainingRun, utcnow
from app.db.session import transaction
from app.learning import metrics
from app.learning.data import build_dataset
from app.learning.gate import Verdict, decide, evaluate
from app.learning.policy import Policy
from app.learning.trainer import TrainConfig, TrainingInterrupted, save, train
from app.serving.artifacts import load_version
from app.serving.model import resolve_device
from app.versions import activate, active_version, next_version_number, register_version

log = logging.getLogger(__name__)

OPEN_STATUSES = ("queued", "running")


class RunAbandoned(Exception):
    """The run is no longer this worker's (the reaper failed it after a lost heartbeat)."""


class RunError(Exception):
    """A run cannot proceed, for a reason worth showing the admin as is."""


@dataclass
class RunControl:
    """What may stop a run from outside: the worker shutting down, or its heartbeat finding
    the run taken away."""

    stop: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> bool:
        return self.stop.is_set() or self.lost.is_set()


# ---------------------------------------------------------------- enqueue


def lock_task(session: Session, task_id: int) -> None:
    """Serialise run bookkeeping per task: FOR UPDATE on PostgreSQL; on SQLite a no-op write
    takes the database's write lock now, before the check that depends on it."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Task.id).where(Task.id == task_id).with_for_update())
    else:
        session.execute(update(Task).where(Task.id == task_id).values(id=Task.id))


def open_run(session: Session, task_id: int) -> TrainingRun | None:
    return session.scalar(
        select(TrainingRun).where(TrainingRun.task_id == task_id, TrainingRun.status.in_(OPEN_STATUSES))
        .order_by(TrainingRun.id).limit(1)
    )


def enqueue_run(session: Session, task: Task, trigger: str = "admin") -> tuple[TrainingRun, bool]:
    """Queue a run for `task`, or return the one already queued or running: (run, created).

    Race-safe: the task row is locked before the check, so two callers cannot both create.
    Runs inside the caller's transaction; the caller commits.
    """
    lock_task(session, task.id)
    existing = open_run(session, task.id)
    if existing is not None:
        return existing, False
    run = TrainingRun(task_id=task.id, status="queued", trigger=trigger)
    session.add(run)
    session.flush()
    return run, True


# ---------------------------------------------------------------- execute


def train_config_for(task: Task, policy: Policy, settings: Settings, max_len: int) -> TrainConfig:
    return TrainConfig(
        epochs=policy.epochs,
        batch_size=policy.batch_size,
        lr=policy.learning_rate,
        lambda_data=task.lambda_data,
        variant=task.feedback_loss,
        seed=settings.seed,
        patience=policy.patience,
        max_len=max_len,
        finetune=task.finetune,
        lora_r=policy.lora_r,
        lora_alpha=policy.lora_alpha,
        device=settings.device,
    )


def _owned(session: Session, run_id: int, worker_id: str) -> TrainingRun:
    """The run, row-locked, if it is still running under this worker; else RunAbandoned."""
    run = session.scalar(select(TrainingRun).where(TrainingRun.id == run_id).with_for_update())
    if run is None or run.status != "running" or run.worker_id != worker_id:
        raise RunAbandoned(f"run {run_id} is no longer running under {worker_id}")
    return run


def _update_owned(factory: sessionmaker[Session], run_id: int, worker_id: str, **values: Any) -> bool:
    with transaction(factory) as s:
        res = s.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id, TrainingRun.status == "running", TrainingRun.worker_id == worker_id)
            .values(**values)
        )
        return res.rowcount == 1


def execute_run(
    settings: Settings,
    factory: sessionmaker[Session],
    run_id: int,
    *,
    worker_id: str,
    control: RunControl | None = None,
) -> str:
    """Execute a run this worker has claimed.  Returns its final status: promoted, rejected or
    failed; `queued` if a shutdown interrupted it (requeued); `abandoned` if it was taken away."""
    control = control or RunControl()
    started = time.monotonic()
    task_name = "?"
    candidate_id: int | None = None
    candidate_path: Path | None = None
    try:
        with transaction(factory) as s:
            run = _owned(s, run_id, worker_id)
            task = s.get(Task, run.task_id)
            task_name = task.name
            parent = active_version(s, task.id)
            if parent is None:
                raise RunError(f"task {task.name!r} has no active version to start from")
            s.expunge(task)
            parent_id, parent_path = parent.id, Path(parent.path)
        metrics.RUNS.labels(task_name, "started").inc()
        policy = Policy.from_dict(task.policy)

        with factory() as s:
            dataset = build_dataset(s, task=task, policy=policy)
        if not dataset.train:
            raise RunError(f"nothing to train on: {dataset.counts}")

        device = resolve_device(settings.device)
        model, tokenizer, parent_meta = load_version(parent_path, device=device,
                                                     trainable_lora=task.finetune == "lora")
        config = train_config_for(task, policy, settings, parent_meta.max_seq_len)
        active_metrics = evaluate(model, tokenizer, dataset.validation, dataset.labels, device=device,
                                  max_len=config.max_len)

        def on_progress(epoch: int, step: int, total: int, loss: float) -> None:
            progress = {"epoch": epoch, "epochs": config.epochs, "step": step, "total_steps": total,
                        "fraction": round(step / total, 4), "loss": loss if math.isfinite(loss) else None}
            if not _update_owned(factory, run_id, worker_id, progress=progress):
                control.lost.set()

        curve: list[dict[str, Any]] = []
        last_curve_write = [0.0]

        def on_epoch(entry: dict[str, Any]) -> None:
            """The loss curve so far, written at most once a second (short epochs are many)."""
            curve.append(entry)
            if time.monotonic() - last_curve_write[0] >= config.progress_every_s:
                last_curve_write[0] = time.monotonic()
                if not _update_owned(factory, run_id, worker_id, loss_curve=list(curve)):
                    control.lost.set()

        result = train(model, tokenizer, dataset.train, dataset.validation, config,
                       on_progress=on_progress, on_epoch=on_epoch, should_stop=control.should_stop)
        counts = {**dataset.counts, **result.counts}

        with factory() as s:
            number = next_version_number(s, task.id)
        candidate_path, sha = save(model, tokenizer, parent_meta=parent_meta, parent_path=parent_path,
                                   root=settings.models_dir / task.name, name=f"v{number}",
                                   extra={"training_run_id": run_id, "parent_version_id": parent_id})
        with transaction(factory) as s:
            _owned(s, run_id, worker_id)
            version = register_version(s, task=s.get(Task, task.id), path=candidate_path, sha256=sha,
                                       version=next_version_number(s, task.id), status="candidate",
                                       parent_id=parent_id, training_run_id=run_id, data_counts=counts)
            candidate_id = version.id
            s.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(candidate_version_id=version.id))

        candidate_metrics = evaluate(model, tokenizer, dataset.validation, dataset.labels, device=device,
                                     max_len=config.max_len)
        verdict = decide(candidate_metrics, active_metrics, tolerance=policy.gate_tolerance,
                         max_recall_drop=policy.max_recall_drop)

        with transaction(factory) as s:
            run = _owned(s, run_id, worker_id)
            version = s.get(ModelVersion, candidate_id)
            current = active_version(s, task.id)
            if verdict.promote and (current is None or current.id != parent_id):
                verdict = Verdict(False, "the active version changed while this run trained; the candidate was "
                                  "compared with its parent, not with the current active", verdict.candidate,
                                  verdict.active, verdict.tolerance, verdict.max_recall_drop)
            gate = {**verdict.to_json(), "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                    "stopped_early": result.stopped_early}
            version.metrics = gate
            if verdict.promote:
                activate(s, version=version)
            else:
                version.status = "rejected"
                version.reason = verdict.reason
            duration = time.monotonic() - started
            run.status = "promoted" if verdict.promote else "rejected"
            run.gate = gate
            run.loss_curve = result.loss_curve
            run.data_counts = counts
            run.watermark = dataset.watermark
            run.device = result.device
            run.duration_s = duration
            run.finished_at = utcnow()
            run.progress = {"epoch": result.epochs_run, "epochs": config.epochs, "step": result.steps,
                            "total_steps": result.steps, "fraction": 1.0, "best_epoch": result.best_epoch}
        log.info("run %s (%s): %s — %s", run_id, task_name, run.status, verdict.reason)
        metrics.RUNS.labels(task_name, run.status).inc()
        metrics.RUN_SECONDS.labels(task_name).observe(duration)
        metrics.GATE_SCORE.labels(task_name, "candidate").set(candidate_metrics["score"] or 0.0)
        metrics.GATE_SCORE.labels(task_name, "active").set(active_metrics["score"] or 0.0)
        metrics.GATE_PROMOTED.labels(task_name).set(1.0 if verdict.promote else 0.0)
        return run.status
    except (RunAbandoned, TrainingInterrupted) as exc:
        if control.lost.is_set() or isinstance(exc, RunAbandoned):
            log.warning("run %s abandoned: %s", run_id, exc)
            _drop_candidate(factory, candidate_id, candidate_path, "its run was taken away from this worker")
            metrics.RUNS.labels(task_name, "abandoned").inc()
            return "abandoned"
        log.info("run %s interrupted by shutdown; requeued", run_id)
        _drop_candidate(factory, candidate_id, candidate_path, "its run was interrupted")
        with transaction(factory) as s:
            try:
                run = _owned(s, run_id, worker_id)
            except RunAbandoned:
                return "abandoned"
            run.status, run.worker_id, run.started_at, run.heartbeat_at = "queued", None, None, None
            run.attempts = max(run.attempts - 1, 0)  # a shutdown is not the run's fault
            run.progress, run.loss_curve, run.error = {}, [], "interrupted by worker shutdown; requeued"
        metrics.RUNS.labels(task_name, "requeued").inc()
        return "queued"
    except Exception as exc:
        log.exception("run %s failed", run_id)
        error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RunError) else str(exc)
        _drop_candidate(factory, candidate_id, candidate_path, f"run failed: {error}")
        duration = time.monotonic() - started
        with transaction(factory) as s:
            try:
                run = _owned(s, run_id, worker_id)
            except RunAbandoned:
                return "abandoned"
            run.status, run.error, run.finished_at, run.duration_s = "failed", error[:4000], utcnow(), duration
        metrics.RUNS.labels(task_name, "failed").inc()
        metrics.RUN_SECONDS.labels(task_name).observe(duration)
        return "failed"
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _drop_candidate(factory: sessionmaker[Session], version_id: int | None, path: Path | None, reason: str) -> None:
    """A candidate whose run did not finish: rejected if registered, its files removed if not."""
    if version_id is not None:
        with transaction(factory) as s:
            s.execute(update(ModelVersion).where(ModelVersion.id == version_id, ModelVersion.status == "candidate")
                      .values(status="rejected", reason=reason))
    elif path is not None:
        with factory() as s:
            referenced = s.scalar(select(ModelVersion.id).where(ModelVersion.path == str(path)).limit(1))
        if referenced is None:
            shutil.rmtree(path, ignore_errors=True)
