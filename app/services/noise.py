"""How noisy each client's feedback on a task is (app/learning/noise.py), from the rows a training
run would read: the admin sees every client, a key with `read` scope only its own estimate."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.tables import Client, Task
from app.db.training_rows import TrainingRows, load_training_rows, trusted_client_ids
from app.kinds import TaskSpec, get_kind
from app.learning.noise import NoiseReport, estimate_noise
from app.services.clients import Caller, allow
from app.services.tasks import load_task


def noise_of_rows(session: Session, task: Task, rows: TrainingRows) -> NoiseReport:
    """The noise model on a task's rows, with the task kind's `same` and its trusted keys; a signal
    about one part of an answer (a tagging span) is judged on that part."""
    spec = TaskSpec.of(task)
    kind = get_kind(task.kind)
    feedback = [replace(fb, shown=kind.scope_label(fb.shown, fb.span)) if fb.span is not None else fb
                for fb in rows.feedback]
    return estimate_noise(feedback=feedback, examples=rows.examples, trusted=trusted_client_ids(session),
                          same=lambda a, b: kind.same(spec.labels, a, b))


def task_noise(sessions: sessionmaker[Session], *, task: str, caller: Caller, max_rows: int | None = None
               ) -> dict[str, Any]:
    """The pooled flip rate and each client's estimate (the caller's own only, for a key), read
    from at most `max_rows` of the task's newest rows, as a training run reads them."""
    allow(caller, "read", task)
    with sessions() as s:
        row = load_task(s, task)
        rows = load_training_rows(s, row.id, max_rows=max_rows)
        report = noise_of_rows(s, row, rows)
        names = dict(s.execute(select(Client.id, Client.name).where(Client.id.in_(report.clients))).tuples().all())
    clients = [{"client_id": c, "name": names.get(c, f"#{c}"), **est.to_json()}
               for c, est in sorted(report.clients.items())
               if caller.is_admin or c == caller.client_id]
    return {"task": task, "pooled": report.pooled.to_json(), "clients": clients}
