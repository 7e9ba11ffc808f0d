"""How noisy each client's feedback on a task is (app/learning/noise.py), from the rows a training
run would read: the admin sees every client, a key with `read` scope only its own estimate."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import Client, Task
from app.db.training_rows import TrainingRows, load_training_rows
from app.learning.noise import NoiseReport
from app.process.state import AppState
from app.runs.execute import scoped_noise
from app.services.clients import Caller, allow
from app.services.tasks import load_task


def noise_of_rows(session: Session, *, task: Task, rows: TrainingRows) -> NoiseReport:
    """The noise model on a task's rows, as a training run sees it (`app.runs.execute.scoped_noise`)."""
    return scoped_noise(session, task, rows)[1]


def task_noise(state: AppState, *, task: str, caller: Caller) -> dict[str, Any]:
    """The pooled flip rate and each client's estimate (the caller's own only, for a key), read
    from at most FLYWHEEL_MAX_TRAINING_ROWS of the task's newest rows, as a training run reads them."""
    allow(caller, scope="read", task=task)
    with state.sessions() as s:
        row = load_task(s, name=task)
        rows = load_training_rows(s, row.id, max_rows=state.settings.max_training_rows)
        report = noise_of_rows(s, task=row, rows=rows)
        names = dict(s.execute(select(Client.id, Client.name).where(Client.id.in_(report.clients))).all())
    clients = [{"client_id": c, "name": names.get(c, f"#{c}"), **est.to_json()}
               for c, est in sorted(report.clients.items())
               if caller.is_admin or c == caller.client_id]
    return {"task": task, "pooled": report.pooled.to_json(), "clients": clients}
