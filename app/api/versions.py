"""A task's model versions, and activation (rollback or roll forward)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import AdminDep, RowId, StateDep, TaskName
from app.api.schemas import VersionOut
from app.services.versions import activate_version as activate, versions_of

router = APIRouter(tags=["models"])


@router.get("/v1/tasks/{task}/models", response_model=list[VersionOut])
def list_versions(task: TaskName, _: AdminDep, state: StateDep) -> list[VersionOut]:
    return [VersionOut.model_validate(v, from_attributes=True) for v in versions_of(state.sessions, task=task)]


@router.post("/v1/tasks/{task}/models/{version}/activate", response_model=VersionOut)
def activate_version(task: TaskName, version: RowId, _: AdminDep, state: StateDep) -> VersionOut:
    """Serve this version from now on; API processes swap to it within FLYWHEEL_WATCH_INTERVAL_S."""
    return VersionOut.model_validate(activate(state.sessions, task=task, version=version), from_attributes=True)
