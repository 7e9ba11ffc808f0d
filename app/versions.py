"""The model registry in the database: register versions, activate one, roll back.

Activation is one transaction: the old active version becomes `retired`, the new one
`active`; a partial unique index guarantees there is never more than one active version
per task.  API processes notice the change and swap (see `serving/registry.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.db.models import ModelVersion, Task, utcnow
from app.serving.artifacts import VersionMeta, build_zero_shot, save_version


def next_version_number(session: Session, task_id: int) -> int:
    current = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.task_id == task_id))
    return 0 if current is None else current + 1


def active_version(session: Session, task_id: int) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(ModelVersion.task_id == task_id, ModelVersion.status == "active")
    )


def register_version(
    session: Session,
    *,
    task: Task,
    path: Path,
    sha256: str,
    version: int,
    status: str = "candidate",
    parent_id: int | None = None,
    training_run_id: int | None = None,
    metrics: dict[str, Any] | None = None,
    data_counts: dict[str, Any] | None = None,
) -> ModelVersion:
    mv = ModelVersion(
        task_id=task.id,
        version=version,
        parent_id=parent_id,
        status="candidate" if status == "active" else status,
        path=str(path),
        sha256=sha256,
        training_run_id=training_run_id,
        metrics=metrics or {},
        data_counts=data_counts or {},
    )
    session.add(mv)
    session.flush()
    if status == "active":
        activate(session, version=mv)
    return mv


def activate(session: Session, *, version: ModelVersion) -> ModelVersion:
    """Make `version` the task's active version; the previous one is retired."""
    if version.status == "active":
        return version
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.task_id == version.task_id, ModelVersion.status == "active")
        .values(status="retired")
    )
    session.flush()
    version.status = "active"
    version.activated_at = utcnow()
    session.flush()
    return version


def create_zero_shot_files(*, task: Task, base_model: str, models_dir: Path, max_seq_len: int) -> tuple[Path, str]:
    """Build and store version 0 (the slow part: runs outside any transaction)."""
    model, tokenizer = build_zero_shot(base_model, task.labels, task.descriptions)
    meta = VersionMeta(
        task=task.name,
        kind=task.kind,
        labels=list(task.labels),
        encoder={"kind": "full"},
        base_model=base_model,
        max_seq_len=max_seq_len,
    )
    return save_version(model, tokenizer, meta, models_dir / task.name, "v0")
