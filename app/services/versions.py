"""A task's versions: the list, and activating one (rollback or roll forward)."""

from __future__ import annotations

from typing import Any

from app.db.paging import Page
from app.db.session import transaction
from app.db.versions import activate, get_version, list_versions
from app.core.errors import NotFound
from app.process.state import AppState
from app.services.tasks import describe_version, load_task


def versions_of(state: AppState, *, task: str, page: Page = Page()) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the task's versions, oldest first, and the next page's cursor."""
    with state.sessions() as s:
        rows, after = list_versions(s, load_task(s, name=task).id, page)
        return [describe_version(v) for v in rows], after


def activate_version(state: AppState, *, task: str, version: int) -> dict[str, Any]:
    """Serve this version from now on; API processes swap to it within FLYWHEEL_WATCH_INTERVAL_S."""
    with transaction(state.sessions) as s:
        mv = get_version(s, load_task(s, name=task).id, version)
        if mv is None:
            raise NotFound(f"Task {task!r} has no version {version}.", field="version", slug="unknown-version",
                           title="Unknown version")
        activate(s, version=mv)
    return describe_version(mv)
