"""Training runs as an admin sees them: ask for one, follow one, list a task's."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.db.paging import Page
from app.db.tables import TrainingRun
from app.runs import lifecycle
from app.services.tasks import load_task
from app.core.statuses import Trigger


def _view(run: TrainingRun, task_name: str) -> dict[str, Any]:
    return {**{c.key: getattr(run, c.key) for c in TrainingRun.__table__.columns}, "task": task_name}


def retrain(sessions: sessionmaker[Session], *, task: str) -> TrainingRun:
    """Queue a run; Conflict naming the open run if one is already queued or running."""
    return lifecycle.request_run(sessions, task=task, trigger=Trigger.ADMIN)


def get_run(sessions: sessionmaker[Session], *, run_id: int) -> dict[str, Any]:
    with sessions() as s:
        return _view(*lifecycle.get_run(s, run_id))


def runs_of(sessions: sessionmaker[Session], *, task: str, page: Page = Page()) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the task's runs, newest first, and the next page's cursor."""
    with sessions() as s:
        t = load_task(s, task)
        rows, after = lifecycle.list_runs(s, t.id, page)
        return [_view(r, t.name) for r in rows], after


def cancel(sessions: sessionmaker[Session], *, run_id: int) -> dict[str, Any]:
    """Cancel a queued or running run; the run as it is now."""
    lifecycle.cancel_run(sessions, run_id=run_id)
    return get_run(sessions, run_id=run_id)
