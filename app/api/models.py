"""The registry of a task's versions, and activation (rollback or roll forward)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from app.api.deps import AdminDep, SessionDep, load_task
from app.api.problems import Problem
from app.db.models import ModelVersion
from app.schemas import VersionOut
from app.services.tasks import version_out
from app.versions import activate

router = APIRouter(tags=["models"])


@router.get("/v1/tasks/{task}/models", response_model=list[VersionOut])
def list_versions(task: str, _: AdminDep, session: SessionDep) -> list[VersionOut]:
    t = load_task(session, task)
    rows = session.scalars(select(ModelVersion).where(ModelVersion.task_id == t.id).order_by(ModelVersion.version))
    return [version_out(v) for v in rows]


@router.post("/v1/tasks/{task}/models/{version}/activate", response_model=VersionOut)
def activate_version(task: str, version: int, _: AdminDep, session: SessionDep) -> VersionOut:
    """Serve this version from now on; API processes swap to it within FLYWHEEL_WATCH_INTERVAL_S."""
    with session.begin():
        t = load_task(session, task)
        mv = session.scalar(select(ModelVersion).where(ModelVersion.task_id == t.id, ModelVersion.version == version))
        if mv is None:
            raise Problem(404, "unknown-version", "Unknown version", f"Task {task!r} has no version {version}.",
                          field="version")
        activate(session, version=mv)
        out = version_out(mv)
    return out
