"""What the benchmark puts into (and reads from) the service's database and model store,
directly: predictions for feedback to point at, a second version to swap to, a throw-away
PostgreSQL database."""

from __future__ import annotations

import json
from pathlib import Path

from app.tools.bench.driving import TASK
from app.core.statuses import VersionStatus


def db_sessions(url: str):
    from app.db.session import make_engine, make_sessionmaker

    engine = make_engine(url)
    return engine, make_sessionmaker(engine)


def prefill_predictions(db_url: str, client_key: str, n: int) -> list[str]:
    """Stored predictions of the bench client (inserted directly: feedback needs targets, not forwards)."""
    from sqlalchemy import insert, select

    from app.db.tables import Client, ModelVersion, Prediction, Task, new_id, utcnow
    from app.core.security import hash_api_key

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


def postgres_database(admin_url: str):
    """A fresh database on the server of `admin_url`, dropped afterwards."""
    from app.db.session import scratch_postgres_database

    return scratch_postgres_database(admin_url, "flywheel_bench")


# ---------------------------------------------------------------- in-process model work


def active_row(db_url: str):
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


def prepare_active_engines(db_url: str, data_dir: Path, base_model: str, threads: int) -> dict:
    """The active version's inference engines, prepared as the worker would (app/runs/prepare.py),
    stored in the service's database; the record."""
    from app.core.config import Settings
    from app.runs.prepare import backfill_engines

    settings = Settings(data_dir=data_dir, database_url=db_url, base_model=base_model, torch_threads=threads)
    engine, sessions = db_sessions(db_url)
    try:
        backfill_engines(sessions, settings)
    finally:
        engine.dispose()
    return active_row(db_url).engines


def bare_feedback_inserts(db_url: str, ids: list[str], labels: list[str], *, concurrency: int) -> dict:
    """The floor under feedback ingest: `concurrency` threads, each with its own psycopg
    connection, inserting the rows the HTTP run inserts (one transaction each, as one request
    is), with no HTTP, auth or validation.  requests/s."""
    import threading
    import time

    import psycopg
    from sqlalchemy.engine import make_url

    from app.db.tables import utcnow

    url = make_url(db_url)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        task_row = conn.execute("SELECT id FROM tasks WHERE name = %s", (TASK,)).fetchone()
        prediction_row = conn.execute("SELECT client_id FROM predictions WHERE id = %s", (ids[0],)).fetchone()
    if task_row is None or prediction_row is None:
        raise RuntimeError(f"the bench's task {TASK!r} or its first prediction is missing from {url.database}")
    task_id, client_id = task_row[0], prediction_row[0]
    chunks = [ids[i::concurrency] for i in range(concurrency)]
    barrier = threading.Barrier(concurrency + 1)

    def work(part: list[str]) -> None:
        with psycopg.connect(dsn) as conn:
            barrier.wait()
            for i, pid in enumerate(part):
                correction = labels[0] if i % 10 == 9 else None
                with conn.transaction():
                    conn.execute("SELECT client_id FROM predictions WHERE id = %s", (pid,))
                    conn.execute("INSERT INTO feedback (prediction_id, task_id, client_id, signal, correction, "
                                 "created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                                 (pid, task_id, client_id, 1 if i % 2 else -1, correction, utcnow()))

    threads = [threading.Thread(target=work, args=(part,)) for part in chunks]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"requests": len(ids), "concurrency": concurrency, "requests_per_s": len(ids) / elapsed}
