"""What the benchmark puts into (and reads from) the service's database and model store,
directly: predictions for feedback to point at, a second version to swap to, a throw-away
PostgreSQL database."""

from __future__ import annotations

import json
from pathlib import Path

from app.bench.driving import TASK
from app.statuses import VersionStatus


def db_sessions(url: str):  # noqa: ANN201
    from app.db.session import make_engine, make_sessionmaker

    engine = make_engine(url)
    return engine, make_sessionmaker(engine)


def prefill_predictions(db_url: str, client_key: str, n: int) -> list[str]:
    """Stored predictions of the bench client (inserted directly: feedback needs targets, not forwards)."""
    from sqlalchemy import insert, select

    from app.db.tables import Client, ModelVersion, Prediction, Task, new_id, utcnow
    from app.security import hash_api_key

    engine, sessions = db_sessions(db_url)
    try:
        with sessions() as s, s.begin():
            task_id = s.scalar(select(Task.id).where(Task.name == TASK))
            mv_id = s.scalar(select(ModelVersion.id).where(ModelVersion.task_id == task_id,
                                                           ModelVersion.status == VersionStatus.ACTIVE))
            client_id = s.scalar(select(Client.id).where(Client.key_hash == hash_api_key(client_key)))
            now = utcnow()
            ids = [new_id() for _ in range(n)]
            s.execute(insert(Prediction), [
                {"id": pid, "task_id": task_id, "model_version_id": mv_id, "client_id": client_id,
                 "text": f"bench text {i}", "label": "positive", "scores": {"negative": 0.2, "positive": 0.8},
                 "created_at": now} for i, pid in enumerate(ids)])
        return ids
    finally:
        engine.dispose()


def feedback_items(ids: list[str], labels: list[str]) -> list[list[str]]:
    items = []
    for i, pid in enumerate(ids):
        if i % 10 == 9:
            body = {"signal": -1, "correction": labels[0]}
        else:
            body = {"signal": 1 if i % 2 else -1}
        items.append([f"/v1/predictions/{pid}/feedback", json.dumps(body)])
    return items


def postgres_database(admin_url: str):  # noqa: ANN201 - a context manager of the URL
    """A fresh database on the server of `admin_url`, dropped afterwards."""
    from app.db.session import scratch_postgres_database

    return scratch_postgres_database(admin_url, "flywheel_bench")


# ---------------------------------------------------------------- in-process model work


def active_row(db_url: str):  # noqa: ANN201
    from app.db.versions import active_rows

    engine, sessions = db_sessions(db_url)
    try:
        with sessions() as s:
            return next(r for r in active_rows(s) if r.task == TASK)
    finally:
        engine.dispose()


def register_copy_of_active(db_url: str, models_dir: Path) -> int:
    """A second version: the active model saved again under a new name (so the swap is a real load)."""
    import torch

    from app.db.tables import Task
    from app.db.versions import next_version_number, register_version
    from app.kinds import load_version
    from app.model.store import save_version

    row = active_row(db_url)
    model, tok, meta = load_version(Path(row.path), device=torch.device("cpu"))
    engine, sessions = db_sessions(db_url)
    try:
        with sessions() as s:
            version = next_version_number(s, row.task_id)
        path, sha = save_version(model, tok, meta, models_dir / TASK, f"v{version}")  # no transaction open
        with sessions() as s, s.begin():
            register_version(s, task=s.get(Task, row.task_id), path=path, sha256=sha, version=version,
                             status=VersionStatus.CANDIDATE, parent_id=row.version_id,
                             metrics={"bench": "copy of the active version"})
        return version
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the run
