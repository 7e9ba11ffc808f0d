"""The whole loop over real HTTP on the tiny model: examples and feedback in, a retrain run,
a promoted version that moved toward the feedback, and a rollback; plus hot swaps under load."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from app.core.config import Settings
from app.db.session import make_engine, make_sessionmaker, transaction
from app.db.versions import next_version_number, register_version
from app.kinds import load_version
from app.model.store import read_meta, save_version
from app.process.worker import Worker
from support import ADMIN
from support.waiting import wait_until
from support.learning import FAST_POLICY, LABELS, synthetic

GIVE_UP_S = 60.0  # how long to wait for something (a poll-based swap, answers) before failing; no speed claim


def create_task(http: httpx.Client, **policy: object) -> None:
    body = {"name": "intent", "labels": LABELS, "lambda": 0.5,
            "policy": {**FAST_POLICY, "gate_tolerance": 1.0, "max_recall_drop": 1.0, **policy}}
    assert http.post("/v1/tasks", json=body).status_code == 201


def p_gold(http: httpx.Client, pairs: list[tuple[str, str]]) -> tuple[int, float]:
    """(version that answered, mean probability it gives the gold label)."""
    r = http.post("/v1/tasks/intent/predict", json={"texts": [t for t, _ in pairs]}).json()
    probs = [p["scores"][gold] for p, (_, gold) in zip(r["predictions"], pairs)]
    return r["model_version"], sum(probs) / len(probs)


def wait_for_version(http: httpx.Client, version: int, probe: str = "rain tomorrow",
                     check: Callable[[], object] = lambda: None) -> None:
    """Until the API answers with `version` (the watcher polls every 0.1 s in tests); `check`
    runs on every poll, to fail at once if something beside the wait went wrong."""
    def serving() -> bool:
        check()
        return http.post("/v1/tasks/intent/predict", json={"text": probe}).json()["model_version"] == version

    wait_until(serving, GIVE_UP_S, f"the API to serve version {version}")


def test_feedback_retrain_promote_then_rollback(http: httpx.Client, settings: Settings) -> None:
    create_task(http)
    data = synthetic(48, seed=1)
    examples, traffic = data[:24], data[24:]
    r = http.post("/v1/tasks/intent/examples", json={"examples": [{"text": t, "label": y} for t, y in examples]})
    assert r.status_code == 201
    version0, before = p_gold(http, traffic)
    assert version0 == 0
    preds = http.post("/v1/tasks/intent/predict", json={"texts": [t for t, _ in traffic]}).json()["predictions"]
    for p, (_, gold) in zip(preds, traffic):
        body = {"signal": 1} if p["label"] == gold else {"signal": -1, "correction": gold}
        assert http.post(f"/v1/predictions/{p['id']}/feedback", json=body).status_code == 201

    queued = http.post("/v1/tasks/intent/retrain")
    assert queued.status_code == 202
    run_id = queued.json()["run_id"]
    again = http.post("/v1/tasks/intent/retrain")
    assert again.status_code == 409 and again.json()["run_id"] == run_id

    assert Worker(settings).run_once() == "promoted"
    run = http.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "promoted"
    assert run["loss_curve"] and run["progress"]["step"] == run["progress"]["total_steps"]
    assert run["data_counts"]["examples"] > 0
    counts = run["data_counts"]
    assert counts["positive"] + counts["negative"] + counts["corrections"] == len(traffic)
    assert run["gate"]["verdict"] == "promote"

    wait_for_version(http, 1)
    version1, after = p_gold(http, traffic)
    assert version1 == 1
    assert after > before + 0.1, f"p(gold) on the feedback texts went {before:.3f} -> {after:.3f}"

    assert http.post("/v1/tasks/intent/models/0/activate").status_code == 200
    wait_for_version(http, 0)
    version_back, rolled_back = p_gold(http, traffic)
    assert version_back == 0
    assert rolled_back == pytest.approx(before, abs=1e-4)
    statuses = {v["version"]: v["status"] for v in http.get("/v1/tasks/intent/models").json()}
    assert statuses == {0: "active", 1: "retired"}


def add_version_with_flipped_head(settings: Settings) -> int:
    """A second version that disagrees with version 0 (head rows swapped), registered as a candidate."""
    factory = make_sessionmaker(make_engine(settings.db_url))
    with transaction(factory) as s:
        from app.db.tables import ModelVersion, Task

        task = s.query(Task).filter_by(name="intent").one()
        v0 = s.query(ModelVersion).filter_by(task_id=task.id, version=0).one()
        model, tokenizer, meta = load_version(Path(v0.path), device=torch.device("cpu"))
        with torch.no_grad():
            model.head.weight.copy_(model.head.weight.flip(0))
        number = next_version_number(s, task.id)
        path, sha = save_version(model, tokenizer, read_meta(Path(v0.path)), settings.models_dir / "intent",
                                 f"v{number}")
        register_version(s, task=task, path=path, sha256=sha, version=number, parent_id=v0.id)
    return number


def test_hot_swap_and_rollback_under_load_fail_no_request(http: httpx.Client, settings: Settings) -> None:
    create_task(http)
    new = add_version_with_flipped_head(settings)
    texts = [t for t, _ in synthetic(8, seed=3)]
    seen: list[tuple[float, float, int]] = []  # (sent, answered, version)
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop() -> int:
        sent_count = 0
        with httpx.Client(base_url=str(http.base_url), headers=ADMIN, timeout=60) as c:
            while not stop.is_set():
                sent = time.monotonic()
                r = c.post("/v1/tasks/intent/predict", json={"texts": texts})
                answered = time.monotonic()
                with lock:
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        seen.append((sent, answered, r.json()["model_version"]))
                sent_count += 1
        return sent_count

    def clients_ok() -> None:
        """Every client still going and no request failed; else the test fails now."""
        for f in clients:
            if f.done():
                f.result(timeout=0)  # its exception, if it died of one
                pytest.fail("a client stopped before it was told to")
        with lock:
            assert failures == []

    def answered_since(t: float, n: int = 8) -> bool:
        clients_ok()
        with lock:
            return sum(1 for sent, _, _ in seen if sent > t) >= n

    pool = ThreadPoolExecutor(4)
    clients = [pool.submit(client_loop) for _ in range(4)]
    try:
        wait_until(lambda: answered_since(float("-inf")), GIVE_UP_S, "the clients' first answers (load is on)")
        assert http.post(f"/v1/tasks/intent/models/{new}/activate").status_code == 200
        wait_for_version(http, new, check=clients_ok)
        swapped_at = time.monotonic()
        wait_until(lambda: answered_since(swapped_at), GIVE_UP_S, "requests sent after the swap to be answered")
        rollback_asked_at = time.monotonic()
        assert http.post("/v1/tasks/intent/models/0/activate").status_code == 200
        wait_for_version(http, 0, check=clients_ok)
        rolled_back_at = time.monotonic()
        wait_until(lambda: answered_since(rolled_back_at), GIVE_UP_S,
                   "requests sent after the rollback to be answered")
    finally:
        stop.set()
        pool.shutdown(wait=False)
    sent_per_client = [f.result(timeout=GIVE_UP_S) for f in clients]  # a client's exception surfaces here
    assert failures == []
    assert sum(sent_per_client) == len(seen)
    assert {v for _, _, v in seen} == {0, new}
    # Requests sent after the swap and answered before the rollback was asked for: all new.
    between = [v for sent, done, v in seen if sent > swapped_at and done < rollback_asked_at]
    assert between and set(between) == {new}
    after = [v for sent, _, v in seen if sent > rolled_back_at]
    assert after and set(after) == {0}
