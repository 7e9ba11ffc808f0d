"""A task's versions: the list, and activating one (rollback or roll forward)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from app.db.paging import Page
from app.db.session import transaction
from app.db.tables import ModelVersion
from app.db.versions import activate, get_version, list_versions
from app.core.errors import NotFound
from app.services.tasks import load_task


def versions_of(sessions: sessionmaker[Session], *, task: str, page: Page = Page()
                ) -> tuple[list[ModelVersion], int | None]:
    """A page of the task's versions, oldest first, and the next page's cursor."""
    with sessions() as s:
        return list_versions(s, load_task(s, task).id, page)


def activate_version(sessions: sessionmaker[Session], *, task: str, version: int) -> ModelVersion:
    """Serve this version from now on; API processes swap to it within FLYWHEEL_WATCH_INTERVAL_S."""
    with transaction(sessions) as s:
        mv = get_version(s, load_task(s, task).id, version)
        if mv is None:
            raise NotFound(f"Task {task!r} has no version {version}.", field="version", slug="unknown-version",
                           title="Unknown version")
        activate(s, version=mv)
    return mv
