"""Prometheus metrics of the API process (operational figures; model quality metrics are the
gate's, in the task kinds).  Training-run figures come from the database at
scrape time (see `RunsCollector`), so they are right however many workers there are."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.tables import ModelVersion, Task, TrainingRun
from app.model.store import dir_bytes
from app.observability.monitoring import watch_tasks, workers
from app.core.statuses import JUDGED_RUN_STATUSES, VersionStatus

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """One instance per app, on its own registry, so several apps in one process (tests) don't clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram("flywheel_request_seconds", "HTTP request latency", ["method", "route", "status"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("flywheel_batch_texts", "Texts per forward batch", ["task"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.queue_depth = Gauge("flywheel_queue_texts", "Texts waiting for a forward", ["task"], registry=r)
        self.predictions = Counter("flywheel_predictions_total", "Texts predicted", ["task"], registry=r)
        self.rejected = Counter("flywheel_queue_rejections_total", "Predict calls shed with 503", ["task"], registry=r)
        self.rate_limited = Counter("flywheel_rate_limited_total", "Calls refused with 429: over a client key's "
                                    "rate (client), too many failed authentications (auth), or over a client's "
                                    "share of a task's queue (queue)", ["reason"], registry=r)
        self.feedback_wanted = Counter("flywheel_feedback_wanted_total", "Predictions answered with "
                                       "feedback_wanted: true", ["task"], registry=r)
        self.feedback = Counter("flywheel_feedback_total", "Feedback received", ["task", "signal"], registry=r)
        self.model_version = Gauge("flywheel_model_version", "Version number this process serves", ["task"],
                                   registry=r)
        self.swaps = Counter("flywheel_model_swaps_total", "Hot swaps done by this process", ["task"], registry=r)
        self.feedback_group = Histogram("flywheel_feedback_group_rows", "Feedback signals committed per transaction",
                                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.served_engine = Gauge("flywheel_served_engine", "1 for the engine each task's forward runs on here",
                                   ["task", "engine"], registry=r)


class RunsCollector:
    """Runs by status and the last gate verdict's metrics, read from the database on scrape."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:  # the prometheus_client collector protocol
        runs = GaugeMetricFamily("flywheel_training_runs", "Training runs by status", labels=["task", "status"])
        active = GaugeMetricFamily("flywheel_active_version", "Active version per task (database)", labels=["task"])
        gate = GaugeMetricFamily("flywheel_last_gate_score", "Gate score of the last judged candidate and of the "
                                 "active model it was compared with", labels=["task", "model"])
        try:
            with self._sessions() as s:
                for name, status, n in s.execute(
                    select(Task.name, TrainingRun.status, func.count())
                    .join(TrainingRun, TrainingRun.task_id == Task.id)
                    .group_by(Task.name, TrainingRun.status)
                ):
                    runs.add_metric([name, status], n)
                for name, version in s.execute(
                    select(Task.name, ModelVersion.version).join(ModelVersion, ModelVersion.task_id == Task.id)
                    .where(ModelVersion.status == VersionStatus.ACTIVE)
                ):
                    active.add_metric([name], version)
                last = (
                    select(Task.name, TrainingRun.gate)
                    .join(TrainingRun, TrainingRun.task_id == Task.id)
                    .where(TrainingRun.status.in_(JUDGED_RUN_STATUSES))
                    .order_by(TrainingRun.finished_at.desc())
                )
                seen: set[str] = set()
                for name, verdict in s.execute(last):
                    if name in seen or not verdict:
                        continue
                    seen.add(name)
                    for who in ("candidate", "active"):
                        score = (verdict.get(who) or {}).get("score")
                        if isinstance(score, (int, float)):
                            gate.add_metric([name, who], float(score))
        except Exception:  # a scrape must not fail because the DB blinked
            return
        yield runs
        yield active
        yield gate


async def scrape(metrics: Metrics, batchers: Mapping[str, Any]) -> bytes:
    """The exposition text, with each batcher's queue depth read now (off the event loop: the
    runs collector queries the database)."""
    for task, b in batchers.items():
        metrics.queue_depth.labels(task).set(b.depth)
    return await asyncio.to_thread(generate_latest, metrics.registry)


class WorkerCollector:
    """The embedded worker's liveness, asked of its supervisor on scrape."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:  # the prometheus_client collector protocol
        st = self._status()
        up = GaugeMetricFamily("flywheel_embedded_worker_up", "1 while the worker beside this API process runs")
        up.add_metric([], 1.0 if st["alive"] else 0.0)
        restarts = CounterMetricFamily("flywheel_embedded_worker_restarts", "Times the embedded worker died and "
                                       "was started again")
        restarts.add_metric([], st["restarts"])
        yield up
        yield restarts


class DiskCollector:
    """The model store's size and the free space where it lives, recomputed at most every
    `ttl_s` (walking the store costs a little on every scrape otherwise)."""

    def __init__(self, models_dir: Path, ttl_s: float = 60.0) -> None:
        self._dir, self._ttl = models_dir, ttl_s
        self._at = -ttl_s
        self._used = self._free = 0

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:  # the prometheus_client collector protocol
        now = time.monotonic()
        if now - self._at >= self._ttl:
            self._used = dir_bytes(self._dir)
            probe = self._dir if self._dir.exists() else self._dir.parent
            self._free = shutil.disk_usage(probe).free if probe.exists() else 0
            self._at = now
        used = GaugeMetricFamily("flywheel_model_store_bytes", "Bytes of model versions on disk")
        used.add_metric([], self._used)
        free = GaugeMetricFamily("flywheel_model_store_free_bytes", "Free bytes on the model store's file system")
        free.add_metric([], self._free)
        yield used
        yield free


def _ts(when: datetime) -> float:
    return when.timestamp()


class MonitoringCollector:
    """Drift, the −1 share per version, promotion and training times per task, and worker
    liveness (app/observability/monitoring.py), read from the database at most every `ttl_s` (drift reads
    2 × `window` predictions per task)."""

    def __init__(self, sessions: sessionmaker[Session], *, window: int, worker_timeout_s: float,
                 ttl_s: float = 30.0) -> None:
        self._sessions, self._window, self._timeout, self._ttl = sessions, window, worker_timeout_s, ttl_s
        self._at = -ttl_s
        self._families: list[Metric] = []

    def describe(self) -> list[Metric]:
        return []

    def _read(self) -> list[Metric]:
        psi = GaugeMetricFamily("flywheel_drift_psi", "Population stability index of the active version's latest "
                                "answers against its first ones, by answer category (label) or confidence decile",
                                labels=["task", "of"])
        rows = GaugeMetricFamily("flywheel_drift_rows", "Predictions in each drift window", labels=["task", "window"])
        share = GaugeMetricFamily("flywheel_negative_share", "Share of -1 among the signals on the active version's "
                                  "predictions and on its parent's", labels=["task", "model"])
        signals = GaugeMetricFamily("flywheel_feedback_signals", "+1 and -1 signals on the active version's "
                                    "predictions and on its parent's", labels=["task", "model"])
        promoted = GaugeMetricFamily("flywheel_active_since_timestamp_seconds", "When the active version was "
                                     "activated (unix time)", labels=["task"])
        judged = GaugeMetricFamily("flywheel_last_judged_run_timestamp_seconds", "When the last run that reached "
                                   "the gate finished (the task's creation if none did)", labels=["task"])
        feedback = GaugeMetricFamily("flywheel_last_feedback_timestamp_seconds", "When the last signal arrived",
                                     labels=["task"])
        worker_seen = GaugeMetricFamily("flywheel_worker_last_seen_timestamp_seconds", "The newest heartbeat of any "
                                        "worker process (unix time)")
        worker_up = GaugeMetricFamily("flywheel_worker_up", "1 while some worker's heartbeat is younger than "
                                      "FLYWHEEL_HEARTBEAT_TIMEOUT_S")
        with self._sessions() as s:
            for w in watch_tasks(s, self._window):
                if w.drift is not None:
                    rows.add_metric([w.task, "reference"], w.drift.reference_rows)
                    rows.add_metric([w.task, "recent"], w.drift.recent_rows)
                    if w.drift.label_psi is not None and w.drift.confidence_psi is not None:
                        psi.add_metric([w.task, "label"], w.drift.label_psi)
                        psi.add_metric([w.task, "confidence"], w.drift.confidence_psi)
                for model, sig in (("active", w.active_signals), ("parent", w.parent_signals)):
                    if sig is not None:
                        signals.add_metric([w.task, model], sig.total)
                        if sig.negative_share is not None:
                            share.add_metric([w.task, model], sig.negative_share)
                if w.activated_at is not None:
                    promoted.add_metric([w.task], _ts(w.activated_at))
                judged.add_metric([w.task], _ts(w.last_successful_run_at))
                if w.last_feedback_at is not None:
                    feedback.add_metric([w.task], _ts(w.last_feedback_at))
            alive = workers(s, self._timeout)
        if alive.last_seen_at is not None:
            worker_seen.add_metric([], _ts(alive.last_seen_at))
        worker_up.add_metric([], 1.0 if alive.alive else 0.0)
        return [psi, rows, share, signals, promoted, judged, feedback, worker_seen, worker_up]

    def collect(self) -> Iterator[Metric]:  # the prometheus_client collector protocol
        now = time.monotonic()
        if now - self._at >= self._ttl:
            try:
                self._families = self._read()
            except Exception:  # a scrape must not fail because the DB blinked; keep the last figures
                pass
            self._at = now
        yield from self._families
