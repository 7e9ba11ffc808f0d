"""A task's model versions, and activation (rollback or roll forward)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import AdminDep, PageDep, RowId, StateDep, TaskName, link_next
from app.api.schemas import VersionOut
from app.services.versions import activate_version as activate, versions_of

router = APIRouter(tags=["models"])


@router.get("/v1/tasks/{task}/models", response_model=list[VersionOut])
def list_versions(task: TaskName, _: AdminDep, state: StateDep, page: PageDep, request: Request,
                  response: Response) -> list[VersionOut]:
    """Oldest first, a page at a time (`Link: rel="next"` while more follow; the cursor is a version number)."""
    items, after = versions_of(state, task=task, page=page)
    link_next(request, response, after)
    return [VersionOut.model_validate(v) for v in items]


@router.post("/v1/tasks/{task}/models/{version}/activate", response_model=VersionOut)
def activate_version(task: TaskName, version: RowId, _: AdminDep, state: StateDep) -> VersionOut:
    """Serve this version from now on; API processes swap to it within FLYWHEEL_WATCH_INTERVAL_S."""
    return VersionOut.model_validate(activate(state, task=task, version=version))
