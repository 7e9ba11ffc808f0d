"""Retention: what the model store and the predictions table may forget, so storage stops
growing without bound.

Kept, per task: the active version, its ancestors (rollback goes through them), the newest
`keep_versions` versions, every candidate (a run may be judging it), every rejected version
younger than `rejected_days`, and every directory a kept LoRA version builds on.  Other versions
have their files removed and are marked `pruned` (the row stays, for history; activating one is a
409).  Pruning takes the task locks activation takes (`lock_task`), so a version being
activated is either active when pruning looks, or pruned when activation looks (and refused).
`.tmp-*` directories older than `STALE_TMP_S` are leftovers of a crash mid-save.
Predictions without feedback older than `prediction_days` are deleted (0 keeps them forever);
feedback older than `feedback_days` too (0, the default: feedback is the training data).
Erasure records older than their TTL are forgotten (app/db/erasures.py).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.erasures import forget_old_records
from app.db.session import is_postgres, rowcount, transaction
from app.db.tables import Feedback, ModelVersion, Prediction, Task, utcnow
from app.db.versions import lock_task
from app.db.workers import forget_silent
from app.model.store import META_FILE, dir_bytes
from app.core.statuses import VersionStatus

log = logging.getLogger(__name__)

Ids = TypeVar("Ids", bound=Sequence[Any])  # one batch's keys, as picked and as removed

STALE_TMP_S = 3600.0  # a save takes seconds; an hour-old temporary directory is a crash's
PREDICTION_BATCH = 5000  # rows deleted per transaction, so one pass never holds a long lock


@dataclass
class RetentionReport:
    pruned_versions: list[int] = field(default_factory=list)
    freed_bytes: int = 0
    removed_tmp: list[str] = field(default_factory=list)
    deleted_predictions: int = 0
    deleted_feedback: int = 0
    forgotten_erasures: int = 0
    forgotten_workers: int = 0


def remove_crash_leftovers(models_dir: Path, *, older_than_s: float = STALE_TMP_S, now: float | None = None) -> list[str]:
    """Delete `.tmp-*` directories (a save that never finished) older than `older_than_s`."""
    now = time.time() if now is None else now
    removed = []
    for tmp in models_dir.glob("*/.tmp-*") if models_dir.exists() else ():
        if tmp.is_dir() and now - tmp.stat().st_mtime > older_than_s:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(str(tmp))
            log.warning("removed %s, left by a save that never finished", tmp)
    return removed


def _lora_base(path: str) -> str | None:
    try:
        meta = json.loads((Path(path) / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    encoder = meta.get("encoder") or {}
    return str(encoder["base"]) if encoder.get("kind") == "lora" and encoder.get("base") else None


def _kept(versions: list[ModelVersion], *, keep_versions: int, rejected_cutoff: datetime) -> set[int]:
    by_id = {v.id: v for v in versions}
    keep: set[int] = set()
    for v in versions:
        if v.status in (VersionStatus.ACTIVE, VersionStatus.CANDIDATE):
            keep.add(v.id)
        if v.status == VersionStatus.REJECTED and v.created_at >= rejected_cutoff:
            keep.add(v.id)
    for v in versions:  # ancestors of the active version: the rollback path
        if v.status == VersionStatus.ACTIVE:
            parent = v.parent_id
            while parent is not None and parent in by_id and parent not in keep:
                keep.add(parent)
                parent = by_id[parent].parent_id
    live = [v for v in versions if v.status != VersionStatus.PRUNED]
    keep.update(v.id for v in sorted(live, key=lambda v: v.version, reverse=True)[:keep_versions])
    return keep


def prune_versions(factory: sessionmaker[Session], *, keep_versions: int, rejected_days: float,
                   now: datetime | None = None) -> tuple[list[int], int]:
    """Remove the files of versions retention need not keep; (their ids, bytes freed).  The rows
    are marked first and the files removed after that commits: a version is never left
    activatable with its files gone.  Decided under every task's lock, so no activation, rollback
    or promotion commits between what this reads and what it marks."""
    now = now or utcnow()
    cutoff = now - timedelta(days=rejected_days)
    pruned: list[int] = []
    doomed: list[Path] = []
    with transaction(factory) as s:
        for task_id in s.scalars(select(Task.id).order_by(Task.id)).all():  # in id order: no deadlock
            lock_task(s, task_id)
        every = list(s.scalars(select(ModelVersion).order_by(ModelVersion.task_id, ModelVersion.version)))
        by_task: dict[int, list[ModelVersion]] = {}
        for v in every:
            by_task.setdefault(v.task_id, []).append(v)
        keep = set().union(*(_kept(vs, keep_versions=keep_versions, rejected_cutoff=cutoff)
                             for vs in by_task.values())) if by_task else set()
        kept_paths = {v.path for v in every if v.id in keep}
        kept_paths |= {base for p in list(kept_paths) if (base := _lora_base(p)) is not None}
        for v in every:
            if v.id in keep or v.status == VersionStatus.PRUNED:
                continue
            if v.path not in kept_paths:  # identical content may be shared with a kept version
                doomed.append(Path(v.path))
                kept_paths.add(v.path)  # removed once; another row pointing here is pruned with it
            v.reason = f"pruned by retention on {now:%Y-%m-%d} (was {v.status})"
            v.status = VersionStatus.PRUNED
            pruned.append(v.id)
    freed = 0
    for path in doomed:
        freed += dir_bytes(path)
        shutil.rmtree(path, ignore_errors=True)
    if pruned:
        log.info("retention pruned versions %s, freeing %.1f MB", pruned, freed / 1e6)
    return pruned, freed


def unlabelled_before(session: Session, cutoff: datetime) -> list[str]:
    """Ids of up to PREDICTION_BATCH predictions older than `cutoff` without feedback, row-locked
    on PostgreSQL (feedback on one now waits for this transaction; rows it already holds are skipped)."""
    query = (select(Prediction.id)
             .where(Prediction.created_at < cutoff, ~exists().where(Feedback.prediction_id == Prediction.id))
             .limit(PREDICTION_BATCH))
    if is_postgres(session.get_bind()):
        query = query.with_for_update(skip_locked=True, of=Prediction)
    return list(session.scalars(query).all())


def delete_unlabelled(session: Session, ids: list[str]) -> int:
    """Delete those of `ids` that still have no feedback: feedback committed since they were
    chosen keeps its prediction (the cascade would delete an acknowledged signal)."""
    return rowcount(session.execute(delete(Prediction).where(
        Prediction.id.in_(ids), ~exists().where(Feedback.prediction_id == Prediction.id))))


def _in_batches(factory: sessionmaker[Session], pick: Callable[[Session], Ids],
                remove: Callable[[Session, Ids], int]) -> int:
    """Delete in transactions of one batch each (picked, then removed) until none is left; how many."""
    total = 0
    while True:
        with transaction(factory) as s:
            ids = pick(s)
            if not ids:
                return total
            total += remove(s, ids)


def delete_old_predictions(factory: sessionmaker[Session], *, prediction_days: float,
                           now: datetime | None = None) -> int:
    """Delete predictions without any feedback created more than `prediction_days` ago."""
    if prediction_days <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=prediction_days)
    return _in_batches(factory, lambda s: unlabelled_before(s, cutoff), delete_unlabelled)


def delete_old_feedback(factory: sessionmaker[Session], *, feedback_days: float, now: datetime | None = None) -> int:
    """Delete feedback created more than `feedback_days` ago (0: kept forever, the default: it is
    what the models learn from).  Their predictions then age out like any without feedback."""
    if feedback_days <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=feedback_days)
    return _in_batches(
        factory,
        lambda s: s.scalars(select(Feedback.id).where(Feedback.created_at < cutoff).limit(PREDICTION_BATCH)).all(),
        lambda s, ids: rowcount(s.execute(delete(Feedback).where(Feedback.id.in_(ids)))))


def apply_retention(factory: sessionmaker[Session], models_dir: Path, *, keep_versions: int, rejected_days: float,
                    prediction_days: float, feedback_days: float = 0.0, now: datetime | None = None
                    ) -> RetentionReport:
    """One pass of everything above."""
    report = RetentionReport(removed_tmp=remove_crash_leftovers(models_dir))
    report.pruned_versions, report.freed_bytes = prune_versions(factory, keep_versions=keep_versions,
                                                                rejected_days=rejected_days, now=now)
    report.deleted_feedback = delete_old_feedback(factory, feedback_days=feedback_days, now=now)
    report.deleted_predictions = delete_old_predictions(factory, prediction_days=prediction_days, now=now)
    with transaction(factory) as s:
        report.forgotten_workers = forget_silent(s, now)
        report.forgotten_erasures = forget_old_records(s, now)
    return report
