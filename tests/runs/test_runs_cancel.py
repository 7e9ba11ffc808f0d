"""Cancelling a run: a queued run never starts, a running one is taken from its worker (which
stops and drops its candidate), and an ended run cannot be cancelled."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.db.session import transaction
from app.db.tables import Task, TrainingRun
from app.runs.lifecycle import cancel_run, enqueue_run
from app.core.statuses import VersionStatus
from app.process.worker import Worker
from support import ADMIN
from support.learning import FAST_POLICY, add_examples, create_task, migrated, synthetic, versions
from support.waiting import wait_until

NEVER = {"min_new_signals": 1_000_000, "max_interval_s": None}


def test_cancelling_a_queued_run_over_http(client) -> None:
    assert client.post("/v1/tasks", json={"name": "tickets", "labels": ["bank", "weather"]}).status_code == 201
    run_id = client.post("/v1/tasks/tickets/retrain").json()["run_id"]

    r = client.post(f"/v1/runs/{run_id}/cancel", headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["status"] == "failed" and r.json()["error"] == "cancelled while queued"

    again = client.post(f"/v1/runs/{run_id}/cancel", headers=ADMIN)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["type"].endswith(":run-ended") and again.json()["field"] == "run_id"
    assert client.post("/v1/runs/999999/cancel", headers=ADMIN).json()["type"].endswith(":unknown-run")
    # The task is free for a new run.
    assert client.post("/v1/tasks/tickets/retrain").status_code == 202


def test_cancelling_needs_the_admin_token(client) -> None:
    client.post("/v1/tasks", json={"name": "tickets", "labels": ["bank", "weather"]})
    run_id = client.post("/v1/tasks/tickets/retrain").json()["run_id"]
    key = client.post("/v1/clients", json={"name": "app", "tasks": ["tickets"]}).json()["key"]
    r = client.post(f"/v1/runs/{run_id}/cancel", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403
    assert client.get(f"/v1/runs/{run_id}").json()["status"] == "queued"


def test_cancelling_a_running_run_stops_its_worker_and_promotes_nothing(db_url: str, settings: Settings) -> None:
    factory: sessionmaker[Session] = migrated(db_url)
    task_id = create_task(factory, settings, policy=dict(FAST_POLICY, **NEVER, epochs=100, patience=100))
    add_examples(factory, task_id, synthetic(40, seed=4))
    with transaction(factory) as s:
        run_id = enqueue_run(s, s.get(Task, task_id))[0].id
    worker = Worker(settings, factory=factory)

    def progress() -> int:
        with factory() as s:
            return int(s.get(TrainingRun, run_id).progress.get("step", 0))

    with ThreadPoolExecutor(1) as pool:
        outcome = pool.submit(worker.run_once)
        wait_until(lambda: progress() > 0 or outcome.done(), 120, "training to start")
        cancel_run(factory, run_id=run_id)
        assert outcome.result(timeout=300) == "abandoned"

    with factory() as s:
        run = s.get(TrainingRun, run_id)
        assert run.status == "failed" and run.error.startswith("cancelled while running")
    assert [v.status for v in versions(factory, task_id)] == [VersionStatus.ACTIVE]  # version 0 still serves
