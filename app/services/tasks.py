"""Creating tasks (with their zero-shot version 0) and describing them."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.api.problems import Problem
from app.config import Settings
from app.db.models import Example, Feedback, Prediction, Task
from app.db.session import transaction
from app.schemas import TaskCreate, TaskOut, VersionOut
from app.versions import active_version, create_zero_shot_files, register_version


def _duplicate(name: str) -> Problem:
    return Problem(409, "duplicate-task", "Duplicate task", f"A task named {name!r} already exists.", field="name")


def create_task(*, sessions: sessionmaker[Session], settings: Settings, payload: TaskCreate) -> Task:
    """Build version 0 first (slow, no transaction open), then insert task + version at once."""
    with sessions() as s:
        if s.scalar(select(Task.id).where(Task.name == payload.name)) is not None:
            raise _duplicate(payload.name)
    task = Task(
        name=payload.name,
        kind=payload.kind,
        labels=payload.labels,
        descriptions=payload.descriptions,
        lambda_data=payload.lambda_data,
        feedback_loss=payload.feedback_loss,
        finetune=payload.finetune,
        quantize=payload.quantize,
        policy=payload.policy.model_dump(),
    )
    path, sha = create_zero_shot_files(
        task=task, base_model=settings.base_model, models_dir=settings.models_dir, max_seq_len=settings.max_seq_len
    )
    try:
        with transaction(sessions) as s:
            s.add(task)
            s.flush()
            register_version(s, task=task, path=path, sha256=sha, version=0, status="active",
                             metrics={"zero_shot": True})
    except IntegrityError:
        _remove_orphan(path, sessions)
        raise _duplicate(payload.name) from None
    return task


def _remove_orphan(path: Path, sessions: sessionmaker[Session]) -> None:
    """A lost creation race leaves files no row points at; identical content may be shared, so check."""
    from app.db.models import ModelVersion

    with sessions() as s:
        if s.scalar(select(ModelVersion.id).where(ModelVersion.path == str(path))) is None:
            shutil.rmtree(path, ignore_errors=True)


def counts(session: Session, task_id: int) -> dict[str, object]:
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


def version_out(mv) -> VersionOut:  # noqa: ANN001 - ModelVersion
    return VersionOut.model_validate(mv, from_attributes=True)


def describe(session: Session, task: Task) -> TaskOut:
    active = active_version(session, task.id)
    return TaskOut(
        name=task.name,
        kind=task.kind,
        labels=task.labels,
        descriptions=task.descriptions,
        lambda_=task.lambda_data,
        feedback_loss=task.feedback_loss,
        finetune=task.finetune,
        quantize=task.quantize,
        policy=task.policy,
        active_version=version_out(active) if active else None,
        counts=counts(session, task.id),
        created_at=task.created_at,
    )
