"""How each task is doing in service, read from the database: drift of its answers, the −1
share per version, when it was last promoted and trained, and whether any worker is alive.
`/metrics` exports it (app/observability/metrics.py) and the console shows it.

Drift compares the active version's most recent `window` predictions with its first `window`
(its reference: what it answered right after it was promoted), by the population stability
index PSI = Σ (p − q) · ln(p / q) over the answers' categories (the kind's `category`: a label,
a scale point, the entity types found) and over ten equal bins of confidence (1 − the kind's
uncertainty).  The usual reading: below 0.1 stable, 0.1–0.25 moving, above 0.25 drifted.
No figure is given until the recent window holds `MIN_DRIFT_ROWS` predictions beyond the
reference (fewer make PSI noise).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.tables import Feedback, ModelVersion, Prediction, Task, TrainingRun, utcnow
from app.db.workers import last_seen
from app.kinds import Answer, TaskKind, get_kind
from app.core.statuses import JUDGED_RUN_STATUSES, VersionStatus

MIN_DRIFT_ROWS = 50
CONFIDENCE_BINS = 10
PSI_FLOOR = 1e-4  # a share of 0 on either side counts as this (ln 0 is undefined)
DAYS_SHOWN = 14


def psi(reference: Mapping[str, int], recent: Mapping[str, int]) -> float:
    """Population stability index between two histograms over the union of their keys."""
    n_ref, n_rec = sum(reference.values()), sum(recent.values())
    if n_ref == 0 or n_rec == 0:
        raise ValueError("both histograms need at least one count")
    total = 0.0
    for key in set(reference) | set(recent):
        p = max(recent.get(key, 0) / n_rec, PSI_FLOOR)
        q = max(reference.get(key, 0) / n_ref, PSI_FLOOR)
        total += (p - q) * math.log(p / q)
    return total


def confidence_bin(kind: TaskKind, label: str, scores: Mapping[str, Any]) -> str:
    """The confidence decile of one stored answer, as a histogram key ("0.0" … "0.9")."""
    answer = Answer(label, dict(scores), {"label": label, "scores": dict(scores)})
    conf = 1.0 - min(1.0, max(0.0, float(kind.uncertainty(answer))))
    return f"{min(CONFIDENCE_BINS - 1, int(conf * CONFIDENCE_BINS)) / CONFIDENCE_BINS:.1f}"


@dataclass(frozen=True)
class Drift:
    """The active version's recent answers against its first ones."""

    reference_rows: int
    recent_rows: int
    label_psi: float | None = None
    confidence_psi: float | None = None
    reference_labels: dict[str, int] = field(default_factory=dict)
    recent_labels: dict[str, int] = field(default_factory=dict)


def _histograms(kind: TaskKind, rows: Iterable[Any]) -> tuple[Counter[str], Counter[str]]:
    labels: Counter[str] = Counter()
    confidence: Counter[str] = Counter()
    for label, scores in rows:
        labels[kind.category(label)] += 1
        confidence[confidence_bin(kind, label, scores or {})] += 1
    return labels, confidence


def drift_of(session: Session, kind: TaskKind, version_id: int, window: int) -> Drift:
    """Drift of one version's answers: its first `window` predictions against its latest
    `window` that are not among them."""
    total = int(session.scalar(select(func.count()).select_from(Prediction)
                               .where(Prediction.model_version_id == version_id)) or 0)
    reference_n = min(total, window)
    recent_n = min(window, total - reference_n)
    base = select(Prediction.label, Prediction.scores).where(Prediction.model_version_id == version_id)
    ref_rows = session.execute(base.order_by(Prediction.created_at, Prediction.id).limit(reference_n)).all()
    ref_labels, ref_conf = _histograms(kind, ref_rows)
    if recent_n < MIN_DRIFT_ROWS:
        return Drift(reference_n, recent_n, reference_labels=dict(ref_labels))
    rec_rows = session.execute(base.order_by(Prediction.created_at.desc(), Prediction.id.desc())
                               .limit(recent_n)).all()
    rec_labels, rec_conf = _histograms(kind, rec_rows)
    return Drift(reference_n, recent_n, label_psi=psi(ref_labels, rec_labels), confidence_psi=psi(ref_conf, rec_conf),
                 reference_labels=dict(ref_labels), recent_labels=dict(rec_labels))


@dataclass(frozen=True)
class Signals:
    """The ±1 signals given on one version's predictions."""

    version: int
    positive: int
    negative: int

    @property
    def total(self) -> int:
        return self.positive + self.negative

    @property
    def negative_share(self) -> float | None:
        return self.negative / self.total if self.total else None


def signals_of(session: Session, version: ModelVersion) -> Signals:
    pos, neg = session.execute(
        select(func.count().filter(Feedback.signal == 1), func.count().filter(Feedback.signal == -1))
        .join(Prediction, Prediction.id == Feedback.prediction_id)
        .where(Prediction.model_version_id == version.id)
    ).one()
    return Signals(version.version, int(pos), int(neg))


@dataclass(frozen=True)
class TaskWatch:
    """Everything monitoring says of one task."""

    task: str
    kind: str
    active_version: int | None
    activated_at: datetime | None
    drift: Drift | None
    active_signals: Signals | None
    parent_signals: Signals | None  # the version the active one was trained from
    last_successful_run_at: datetime  # a run that was judged (promoted or rejected); else the task's creation
    last_feedback_at: datetime | None


def watch_task(session: Session, task: Task, window: int) -> TaskWatch:
    kind = get_kind(task.kind)
    active = session.scalar(select(ModelVersion).where(ModelVersion.task_id == task.id,
                                                       ModelVersion.status == VersionStatus.ACTIVE))
    parent = session.get(ModelVersion, active.parent_id) if active is not None and active.parent_id else None
    last_run = session.scalar(select(func.max(TrainingRun.finished_at))
                              .where(TrainingRun.task_id == task.id, TrainingRun.status.in_(JUDGED_RUN_STATUSES)))
    last_feedback = session.scalar(select(func.max(Feedback.created_at)).where(Feedback.task_id == task.id))
    return TaskWatch(
        task=task.name, kind=task.kind,
        active_version=active.version if active is not None else None,
        activated_at=(active.activated_at or active.created_at) if active is not None else None,
        drift=drift_of(session, kind, active.id, window) if active is not None else None,
        active_signals=signals_of(session, active) if active is not None else None,
        parent_signals=signals_of(session, parent) if parent is not None else None,
        last_successful_run_at=last_run or task.created_at,
        last_feedback_at=last_feedback,
    )


def watch_tasks(session: Session, window: int, names: Iterable[str] | None = None) -> list[TaskWatch]:
    """Every task's watch (or the named ones'), by name."""
    q = select(Task).order_by(Task.name)
    if names is not None:
        q = q.where(Task.name.in_(list(names)))
    return [watch_task(session, t, window) for t in session.scalars(q)]


@dataclass(frozen=True)
class Workers:
    """Whether anything is there to train: the newest worker heartbeat."""

    last_seen_at: datetime | None
    alive: bool


def workers(session: Session, timeout_s: float) -> Workers:
    seen = last_seen(session)
    return Workers(seen, seen is not None and utcnow() - seen <= timedelta(seconds=timeout_s))


def daily_counts(session: Session, task_id: int, days: int = DAYS_SHOWN) -> list[dict[str, Any]]:
    """Predictions, +1s, −1s and their sum per UTC day for the last `days` days, oldest first (days with
    nothing included), for the console's chart."""
    since_day = (utcnow() - timedelta(days=days - 1)).date()
    since = datetime(since_day.year, since_day.month, since_day.day, tzinfo=utcnow().tzinfo)
    out: dict[str, dict[str, Any]] = {}
    for i in range(days):
        day = (since_day + timedelta(days=i)).isoformat()
        out[day] = {"day": day, "predictions": 0, "positive": 0, "negative": 0, "signals": 0}
    p_day = func.date(Prediction.created_at)
    for day, n in session.execute(select(p_day, func.count()).where(Prediction.task_id == task_id,
                                                                    Prediction.created_at >= since).group_by(p_day)):
        if str(day) in out:
            out[str(day)]["predictions"] = int(n)
    f_day = func.date(Feedback.created_at)
    for day, pos, neg in session.execute(
        select(f_day, func.count().filter(Feedback.signal == 1), func.count().filter(Feedback.signal == -1))
        .where(Feedback.task_id == task_id, Feedback.created_at >= since).group_by(f_day)
    ):
        if str(day) in out:
            out[str(day)].update(positive=int(pos), negative=int(neg), signals=int(pos) + int(neg))
    return list(out.values())


__all__ = ["Drift", "MIN_DRIFT_ROWS", "Signals", "TaskWatch", "Workers", "confidence_bin", "daily_counts",
           "drift_of", "psi", "signals_of", "watch_task", "watch_tasks", "workers"]
