"""A write ledger under kill -9: clients predict and give feedback while the whole service (API
and its embedded worker, one process group) is killed at a random moment, three times, on SQLite
and on PostgreSQL.  After each restart every prediction and feedback the clients were told was
stored (200/201) is in the database, the active version is the same, and /readyz is 200."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.db.session import make_engine, make_sessionmaker
from app.db.tables import Feedback, ModelVersion, Prediction
from app.process.launch import flywheel_command, free_port, wait_until_up
from support import ADMIN, ADMIN_TOKEN

pytestmark = pytest.mark.faults

GIVE_UP_S = 180.0  # how long to wait for a start before failing; not a performance claim
KILLS = 3


class Ledger:
    """What the clients were told was stored."""

    def __init__(self) -> None:
        self.predictions: set[str] = set()
        self.feedback: set[int] = set()
        self.lock = threading.Lock()


def _client(base: str, key: str, stop: threading.Event, ledger: Ledger, n: int) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = c.post("/v1/tasks/tickets/predict", json={"texts": [f"client {n} text {i} card", "rain"]})
                if r.status_code != 200:
                    continue
                ids = [p["id"] for p in r.json()["predictions"]]
                with ledger.lock:
                    ledger.predictions.update(ids)
                r = c.post(f"/v1/predictions/{ids[0]}/feedback", json={"signal": 1 if i % 2 else -1})
                if r.status_code == 201:
                    with ledger.lock:
                        ledger.feedback.add(r.json()["id"])
            except httpx.HTTPError:  # the server died mid-request: nothing was acknowledged
                time.sleep(0.05)


def _start(data_dir: Path, db_url: str, tiny_model_dir: Path, log: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_DATA_DIR=str(data_dir), FLYWHEEL_DATABASE_URL=db_url, FLYWHEEL_BASE_MODEL=str(tiny_model_dir),
               FLYWHEEL_ADMIN_TOKEN=ADMIN_TOKEN, FLYWHEEL_TORCH_THREADS="1", FLYWHEEL_MAX_SEQ_LEN="32",
               FLYWHEEL_RATE_LIMIT_PER_S="0", FLYWHEEL_USER_HASH_KEY="ledger-test-user-hash-key-0123456789",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with log.open("ab") as out:
        proc = subprocess.Popen(flywheel_command() + ["serve", "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base, alive=lambda: proc.poll() is None, timeout_s=GIVE_UP_S, path="/readyz", logs=[log])
    return base, proc


def _kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the API and its worker, no goodbyes
    proc.wait(GIVE_UP_S)


def test_nothing_acknowledged_is_lost_when_the_service_is_killed(db_url: str, tmp_path: Path,
                                                                 tiny_model_dir: Path) -> None:
    database = db_url
    rng = random.Random(11)
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    base, proc = _start(data_dir, database, tiny_model_dir, log)
    procs = [proc]
    ledger = Ledger()
    engine = make_engine(database)
    sessions = make_sessionmaker(engine)
    try:
        with httpx.Client(base_url=base, headers=ADMIN, timeout=60) as admin:
            # A policy that never retrains on its own: a promotion would change the active version legitimately.
            admin.post("/v1/tasks", json={"name": "tickets", "labels": ["card", "weather"], "policy": {
                "min_new_signals": 1_000_000, "max_interval_s": None}}).raise_for_status()
            key = admin.post("/v1/clients", json={"name": "app", "tasks": ["tickets"]}).json()["key"]
        with sessions() as s:
            active = s.scalar(select(ModelVersion.id).where(ModelVersion.status == "active"))
        for kill in range(KILLS):
            stop = threading.Event()
            clients = [threading.Thread(target=_client, args=(base, key, stop, ledger, n)) for n in range(4)]
            for c in clients:
                c.start()
            time.sleep(rng.uniform(0.5, 2.5))  # a random moment under load
            _kill_group(proc)
            stop.set()
            for c in clients:
                c.join(60)
            base, proc = _start(data_dir, database, tiny_model_dir, log)
            procs.append(proc)
            assert httpx.get(f"{base}/readyz", timeout=30).status_code == 200
            with sessions() as s:
                stored_p = set(s.scalars(select(Prediction.id)))
                stored_f = set(s.scalars(select(Feedback.id)))
                now_active = s.scalar(select(ModelVersion.id).where(ModelVersion.status == "active"))
            assert ledger.predictions and ledger.feedback, f"kill {kill + 1}: nothing acknowledged before the kill"
            assert ledger.predictions <= stored_p, f"kill {kill + 1}: lost {len(ledger.predictions - stored_p)}"
            assert ledger.feedback <= stored_f, f"kill {kill + 1}: lost {len(ledger.feedback - stored_f)} feedback"
            assert now_active == active
    finally:
        for p in procs:
            if p.poll() is None:
                _kill_group(p)
        engine.dispose()
