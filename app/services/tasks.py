"""Tasks: create one (with its version 0, built by the task's kind), find one, describe them
(and a version as the API shows it: a task's description embeds its active one)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.paging import Page, cut, paged
from app.db.session import transaction
from app.db.tables import Example, Feedback, ModelVersion, Prediction, Task
from app.db.versions import active_version, path_in_use, register_version
from app.core.errors import Conflict, NotFound
from app.kinds import TaskSpec, define_task, get_kind
from app.model.store import VersionMeta, save_version
from app.core.policy import Policy
from app.process.state import AppState
from app.services.clients import ADMIN, Caller, allow
from app.core.statuses import VersionStatus


def load_task(session: Session, *, name: str) -> Task:
    """The task named `name`, in the caller's session; NotFound if there is none."""
    task = session.scalar(select(Task).where(Task.name == name))
    if task is None:
        raise NotFound.of("task", name, field="task", detail=f"No task named {name!r}.")
    return task


def _duplicate(name: str) -> Conflict:
    return Conflict(f"A task named {name!r} already exists.", field="name", slug="duplicate-task",
                    title="Duplicate task")


def build_version_zero(task: Task, *, base_model: str, models_dir: Path, max_seq_len: int) -> tuple[Path, str]:
    """Build and store version 0 with the task kind's zero-shot head (slow: no transaction open)."""
    spec = TaskSpec.of(task)
    model, tokenizer = get_kind(task.kind).build_zero_shot(base_model, spec)
    meta = VersionMeta(task=task.name, kind=task.kind, labels=list(spec.labels), encoder={"kind": "full"},
                       base_model=base_model, max_seq_len=max_seq_len)
    return save_version(model, tokenizer, meta, models_dir / task.name, "v0")


def create_task(
    state: AppState,
    *,
    name: str,
    kind: str,
    labels: list[str],
    descriptions: dict[str, str],
    options: Mapping[str, Any] | None = None,
    lambda_data: float,
    feedback_loss: str,
    finetune: str,
    quantize: bool,
    policy: Policy,
) -> dict[str, Any]:
    """Build version 0 first (slow, no transaction open), then insert task + version at once.
    What the labels are (names, or points a kind derives from its own `options`) is the kind's."""
    labels, descriptions = define_task(kind, labels=labels, descriptions=descriptions, options=options or {})
    sessions, settings = state.sessions, state.settings
    with sessions() as s:
        if s.scalar(select(Task.id).where(Task.name == name)) is not None:
            raise _duplicate(name)
    task = Task(name=name, kind=kind, labels=labels, descriptions=descriptions, lambda_data=lambda_data,
                feedback_loss=feedback_loss, finetune=finetune, quantize=quantize, policy=policy.to_dict())
    path, sha = build_version_zero(task, base_model=settings.base_model, models_dir=settings.models_dir,
                                   max_seq_len=settings.max_seq_len)
    try:
        with transaction(sessions) as s:
            s.add(task)
            s.flush()
            register_version(s, task=task, path=path, sha256=sha, version=0, status=VersionStatus.ACTIVE,
                             metrics={"zero_shot": True})
    except IntegrityError:
        with sessions() as s:
            orphan = not path_in_use(s, path)  # identical content may be shared
        if orphan:
            shutil.rmtree(path, ignore_errors=True)
        raise _duplicate(name) from None
    return get_task(state, name=name)


def counts(session: Session, *, task_id: int) -> dict[str, Any]:
    """The task's predictions, feedback (+1, −1, corrections) and examples (per split)."""
    predictions = session.scalar(select(func.count()).select_from(Prediction).where(Prediction.task_id == task_id))
    fb = session.execute(
        select(
            func.count().filter(Feedback.signal == 1),
            func.count().filter(Feedback.signal == -1),
            func.count(Feedback.correction),
        ).where(Feedback.task_id == task_id)
    ).one()
    ex = session.execute(
        select(
            func.coalesce(func.sum(case((Example.split == "train", 1), else_=0)), 0),
            func.coalesce(func.sum(case((Example.split == "validation", 1), else_=0)), 0),
        ).where(Example.task_id == task_id)
    ).one()
    return {
        "predictions": predictions or 0,
        "feedback": {"positive": fb[0], "negative": fb[1], "corrections": fb[2], "total": fb[0] + fb[1]},
        "examples": {"train": int(ex[0]), "validation": int(ex[1]), "total": int(ex[0]) + int(ex[1])},
    }


def describe_version(version: ModelVersion) -> dict[str, Any]:
    """A version as the API shows it: every column but where its files lie on the server."""
    return {c.key: getattr(version, c.key) for c in ModelVersion.__table__.columns if c.key != "path"}


def describe(session: Session, *, task: Task) -> dict[str, Any]:
    """A task as the API shows it: its settings, active version and counts."""
    active = active_version(session, task.id)
    return {
        "name": task.name,
        "kind": task.kind,
        "labels": task.labels,
        "descriptions": task.descriptions,
        **get_kind(task.kind).describe(TaskSpec.of(task)),
        "lambda_": task.lambda_data,
        "feedback_loss": task.feedback_loss,
        "finetune": task.finetune,
        "quantize": task.quantize,
        "policy": task.policy,
        "active_version": None if active is None else describe_version(active),
        "counts": counts(session, task_id=task.id),
        "created_at": task.created_at,
    }


def get_task(state: AppState, *, name: str, caller: Caller = ADMIN) -> dict[str, Any]:
    """The task as the API shows it (`describe`), if the caller may read it."""
    allow(caller, scope="read", task=name)
    with state.sessions() as s:
        return describe(s, task=load_task(s, name=name))


def list_tasks(state: AppState, *, caller: Caller = ADMIN, page: Page = Page()
               ) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the tasks the caller may see, and the next page's cursor."""
    allow(caller, scope="read")
    with state.sessions() as s:
        q = select(Task)
        if caller.tasks is not None:
            q = q.where(Task.name.in_(caller.tasks))
        rows, after = cut(s.scalars(paged(q, Task.id, page)).all(), page, lambda t: t.id)
        return [describe(s, task=t) for t in rows], after
