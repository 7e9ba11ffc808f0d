"""Training runs as an admin sees them: ask for one, follow one, list a task's."""

from __future__ import annotations

from typing import Any

from app.db.paging import Page
from app.db.tables import TrainingRun
from app.process.state import AppState
from app.runs import lifecycle
from app.services.tasks import load_task
from app.core.statuses import Trigger


def _view(run: TrainingRun, task_name: str) -> dict[str, Any]:
    return {**{c.key: getattr(run, c.key) for c in TrainingRun.__table__.columns}, "task": task_name}


def retrain(state: AppState, *, task: str) -> dict[str, Any]:
    """Queue a run: its id and status.  Conflict naming the open run if one is already queued or running."""
    run = lifecycle.request_run(state.sessions, task=task, trigger=Trigger.ADMIN)
    return {"run_id": run.id, "status": run.status}


def get_run(state: AppState, *, run_id: int) -> dict[str, Any]:
    """One run as the API shows it, with its task's name; NotFound if there is none."""
    with state.sessions() as s:
        return _view(*lifecycle.get_run(s, run_id))


def runs_of(state: AppState, *, task: str, page: Page = Page()) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the task's runs, newest first, and the next page's cursor."""
    with state.sessions() as s:
        t = load_task(s, name=task)
        rows, after = lifecycle.list_runs(s, t.id, page)
        return [_view(r, t.name) for r in rows], after


def cancel(state: AppState, *, run_id: int) -> dict[str, Any]:
    """Cancel a queued or running run; the run as it is now."""
    lifecycle.cancel_run(state.sessions, run_id=run_id)
    return get_run(state, run_id=run_id)
