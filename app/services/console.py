"""What the console's pages show, gathered in one call per page (the routes only render it),
and the console's one action of its own: a person's label for a prediction, stored as feedback
through the same code as the API's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.paging import Page
from app.db.tables import ModelVersion, Prediction, Task, TrainingRun
from app.db.threads import in_db_thread
from app.core.errors import Invalid
from app.kinds import KINDS, KindAnswers, TaskSpec, get_kind
from app.observability.monitoring import daily_counts, watch_task, workers
from app.runs import lifecycle
from app.services.clients import Caller, allow
from app.services.feedback import give_feedback, unknown_prediction
from app.services.review import review_queue
from app.services.tasks import describe, list_tasks, load_task
from app.process.state import AppState

RUNS_SHOWN = 20
RECENT_RUNS = 5


def _run_view(run: TrainingRun) -> dict[str, Any]:
    gate = run.gate or {}
    return {"id": run.id, "status": run.status, "trigger": run.trigger, "created_at": run.created_at,
            "started_at": run.started_at, "finished_at": run.finished_at, "duration_s": run.duration_s,
            "progress": run.progress or {}, "loss_curve": run.loss_curve or [], "data_counts": run.data_counts or {},
            "verdict": gate.get("verdict"), "reason": gate.get("reason") or run.error,
            "candidate": gate.get("candidate") or {}, "active": gate.get("active") or {},
            "second_look": gate.get("second_look"),
            "device": run.device, "error": run.error}


def _recent_runs(session: Session, task_id: int, n: int) -> list[dict[str, Any]]:
    rows, _ = lifecycle.list_runs(session, task_id, Page(limit=n))
    return [_run_view(r) for r in rows]


def overview(state: AppState, *, caller: Caller) -> dict[str, Any]:
    """The Tasks page: every task the caller may see with its active version, daily traffic,
    −1 share, drift and (for the admin) its last runs; and whether a worker is alive."""
    settings = state.settings
    items, _ = list_tasks(state, caller=caller, page=Page(limit=200))
    out = []
    with state.sessions() as s:
        for item in items:
            task = load_task(s, name=item["name"])
            out.append({**item, "watch": watch_task(s, task, settings.drift_window), "days": daily_counts(s, task.id),
                        "runs": _recent_runs(s, task.id, RECENT_RUNS) if caller.is_admin else []})
        alive = workers(s, settings.heartbeat_timeout_s)
    return {"tasks": out, "workers": alive}


def task_detail(state: AppState, *, caller: Caller, task: str) -> dict[str, Any]:
    """The Versions page: a task and its versions, newest first, each with its parent, its gate
    metrics against that parent, its run's loss curve and data counts."""
    allow(caller, scope="read", task=task)
    with state.sessions() as s:
        t = load_task(s, name=task)
        versions = s.scalars(select(ModelVersion).where(ModelVersion.task_id == t.id)
                             .order_by(ModelVersion.version.desc())).all()
        number_of: dict[int | None, int] = {v.id: v.version for v in versions}
        run_ids = [v.training_run_id for v in versions if v.training_run_id is not None]
        runs = {r.id: r for r in s.scalars(select(TrainingRun).where(TrainingRun.id.in_(run_ids)))} if run_ids else {}
        shown = []
        for v in versions:
            run = runs.get(v.training_run_id) if v.training_run_id is not None else None
            shown.append({"version": v.version, "status": v.status, "parent": number_of.get(v.parent_id),
                          "created_at": v.created_at, "activated_at": v.activated_at, "metrics": v.metrics or {},
                          "data_counts": v.data_counts or {}, "reason": v.reason,
                          "engine": (v.engines or {}).get("chosen"),
                          "run": _run_view(run) if run is not None else None})
        return {"task": describe(s, task=t), "watch": watch_task(s, t, state.settings.drift_window),
                "versions": shown}


def runs_page(state: AppState, *, caller: Caller, task: str) -> dict[str, Any]:
    """The Runs page: the task's latest runs, newest first, with the gate's verdict in words."""
    allow(caller, scope="read", task=task)
    with state.sessions() as s:
        t = load_task(s, name=task)
        return {"task": describe(s, task=t), "runs": _recent_runs(s, t.id, RUNS_SHOWN)}


def run_status(state: AppState, *, caller: Caller, run_id: int) -> dict[str, Any]:
    """One run as the Runs page refreshes it while it trains."""
    with state.sessions() as s:
        run, task = lifecycle.get_run(s, run_id)
        allow(caller, scope="read", task=task)
        view = _run_view(run)
    return {"task": task, **{k: view[k] for k in ("id", "status", "progress", "verdict", "reason", "loss_curve")}}


def task_info(state: AppState, *, caller: Caller, task: str) -> dict[str, Any]:
    """A task as the Try-it page heads it."""
    allow(caller, scope="read", task=task)
    with state.sessions() as s:
        return describe(s, task=load_task(s, name=task))


def task_names(state: AppState) -> list[str]:
    """Every task's name, for the form that scopes a new key."""
    with state.sessions() as s:
        return list(s.scalars(select(Task.name).order_by(Task.name)))


def review_page(state: AppState, *, caller: Caller, task: str, limit: int = 25) -> dict[str, Any]:
    """The Review page: the queue (the predictions a label is worth most for), the task's labels,
    and its feedback counts (they change as a person labels)."""
    queue = review_queue(state, task=task, caller=caller, limit=limit)
    with state.sessions() as s:
        t = load_task(s, name=task)
        info = describe(s, task=t)
    kind = get_kind(t.kind)
    for item in queue["items"]:
        item["shown"] = kind.answer_value(item["label"])
    return {"task": info, "items": queue["items"]}


def _parse_answer(kind: KindAnswers, raw: str) -> Any:
    """A person's answer from a form field, as the task's kind reads what a person types."""
    raw = raw.strip()
    if not raw:
        raise Invalid("answer", "Pick or type the right answer first.", slug="empty-answer")
    return kind.read_answer(raw, field="answer")


def _reviewed(sessions: sessionmaker[Session], prediction_id: str) -> Any:
    """The prediction a person answers, with its task (None if there is no such prediction)."""
    with sessions() as s:
        return s.execute(select(Prediction.label, Prediction.text, Task.name, Task.kind, Task.labels,
                                Task.descriptions)
                         .join(Task, Task.id == Prediction.task_id).where(Prediction.id == prediction_id)).one_or_none()


async def correct(state: AppState, *, caller: Caller, prediction_id: str, answer: str) -> dict[str, Any]:
    """Store a person's answer for a prediction: +1 when it is what the model said, else −1 with
    the answer as the correction; through the API's own feedback code (the same checks, the same
    commit before returning).  The read runs on the database threads: waiting for a connection
    must not stop the event loop."""
    row = await in_db_thread(_reviewed, state.sessions, prediction_id)
    if row is None or not caller.sees(row.name):
        raise unknown_prediction(prediction_id)
    kind = get_kind(row.kind)
    value = _parse_answer(kind, answer)
    spec = TaskSpec(name=row.name, kind=row.kind, labels=[str(x) for x in row.labels],
                    descriptions=dict(row.descriptions or {}))
    stored = kind.canonical(spec, value, text=row.text, field="answer")
    if kind.same(spec.labels, row.label, stored):
        return await give_feedback(state, prediction_id=prediction_id, caller=caller, signal=1, correction=None,
                                   user_id=None)
    return await give_feedback(state, prediction_id=prediction_id, caller=caller, signal=-1, correction=value,
                               user_id=None)


# KINDS: the kinds by name, which the console's templates ask how to offer a kind and take an answer
__all__ = ["KINDS", "correct", "overview", "review_page", "run_status", "runs_page", "task_detail", "task_info",
           "task_names"]
