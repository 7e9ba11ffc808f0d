"""A task's versions in the database: register one, activate one (rollback or roll forward),
find the active ones.

Activation is one transaction: the old active version becomes `retired`, the new one
`active`; a partial unique index guarantees there is never more than one active version
per task.  It holds the task's lock (`lock_task`), as a run's promotion and retention's
pruning do, so none of them decides on a state another is changing.  API processes notice
the change and swap (see `serving/registry.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.db.paging import Page, cut, paged
from app.db.session import is_postgres
from app.db.tables import ModelVersion, Task, utcnow
from app.core.statuses import VersionStatus
from app.core.errors import Conflict


def lock_task(session: Session, task_id: int) -> None:
    """Serialise a task's version and run bookkeeping: FOR NO KEY UPDATE on PostgreSQL; on SQLite a
    no-op write takes the database's write lock now, before the check that depends on it.

    NO KEY UPDATE, not UPDATE: lockers still wait for each other, but an insert that references the
    task (a prediction, feedback, a run: its foreign-key check takes KEY SHARE on the task's row)
    does not wait for a lock holder, so a promotion or retention never stalls serving."""
    if is_postgres(session.get_bind()):
        # (SQLAlchemy spells FOR NO KEY UPDATE as key_share=True without read=True)
        session.execute(select(Task.id).where(Task.id == task_id).with_for_update(key_share=True))
    else:
        session.execute(update(Task).where(Task.id == task_id).values(id=Task.id))


def next_version_number(session: Session, task_id: int) -> int:
    current = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.task_id == task_id))
    return 0 if current is None else current + 1


def active_version(session: Session, task_id: int) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(ModelVersion.task_id == task_id, ModelVersion.status == VersionStatus.ACTIVE)
    )


def register_version(
    session: Session,
    *,
    task: Task,
    path: Path,
    sha256: str,
    version: int,
    status: VersionStatus = VersionStatus.CANDIDATE,
    parent_id: int | None = None,
    training_run_id: int | None = None,
    metrics: dict[str, Any] | None = None,
    data_counts: dict[str, Any] | None = None,
) -> ModelVersion:
    mv = ModelVersion(
        task_id=task.id,
        version=version,
        parent_id=parent_id,
        status=VersionStatus.CANDIDATE if status == VersionStatus.ACTIVE else status,
        path=str(path),
        sha256=sha256,
        training_run_id=training_run_id,
        metrics=metrics or {},
        data_counts=data_counts or {},
    )
    session.add(mv)
    session.flush()
    if status == VersionStatus.ACTIVE:
        activate(session, version=mv)
    return mv


def activate(session: Session, *, version: ModelVersion) -> ModelVersion:
    """Make `version` the task's active version; the previous one is retired.  Conflict for a
    version whose files retention removed: its status is read again under the task's lock, so a
    version pruned after the caller loaded it is refused too."""
    lock_task(session, version.task_id)
    session.refresh(version, ["status", "reason"])
    if version.status == VersionStatus.ACTIVE:
        return version
    if version.status == VersionStatus.PRUNED:
        raise Conflict(f"Version {version.version} was pruned by retention ({version.reason}); its files are gone.",
                       field="version", slug="version-pruned", title="Version pruned")
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.task_id == version.task_id, ModelVersion.status == VersionStatus.ACTIVE)
        .values(status=VersionStatus.RETIRED)
    )
    session.flush()
    version.status = VersionStatus.ACTIVE
    version.activated_at = utcnow()
    session.flush()
    return version


def get_version(session: Session, task_id: int, number: int) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.task_id == task_id, ModelVersion.version == number))


def list_versions(session: Session, task_id: int, page: Page = Page()) -> tuple[list[ModelVersion], int | None]:
    """A page of the task's versions, oldest first, and the next page's cursor (a version number)."""
    rows = session.scalars(paged(select(ModelVersion).where(ModelVersion.task_id == task_id), ModelVersion.version,
                                 page)).all()
    return cut(rows, page, lambda v: v.version)


def path_in_use(session: Session, path: Path | str) -> bool:
    """Does any version row point at these files (identical content is stored once)?"""
    return session.scalar(select(ModelVersion.id).where(ModelVersion.path == str(path)).limit(1)) is not None


@dataclass(frozen=True)
class ActiveRow:
    """What an API process needs to serve a task's active version."""

    task_id: int
    task: str
    version_id: int
    version: int
    path: str
    quantize: bool
    sha256: str = ""  # of the version's directory, as stored when it was written
    parent_id: int | None = None
    engines: dict[str, Any] = field(default_factory=dict)  # see ModelVersion.engines


_SERVED = (Task.id, Task.name, ModelVersion.id, ModelVersion.version, ModelVersion.path, Task.quantize,
           ModelVersion.sha256, ModelVersion.parent_id, ModelVersion.engines)


def active_rows(session: Session) -> list[ActiveRow]:
    stmt = (
        select(*_SERVED)
        .join(ModelVersion, (ModelVersion.task_id == Task.id) & (ModelVersion.status == VersionStatus.ACTIVE))
        .order_by(Task.id)
    )
    return [ActiveRow(*r) for r in session.execute(stmt).all()]


def served_row(session: Session, version_id: int) -> ActiveRow | None:
    """What serving needs of any version (a fallback when the active one cannot be loaded)."""
    r = session.execute(select(*_SERVED).join(ModelVersion, ModelVersion.task_id == Task.id)
                        .where(ModelVersion.id == version_id)).one_or_none()
    return ActiveRow(*r) if r is not None else None
