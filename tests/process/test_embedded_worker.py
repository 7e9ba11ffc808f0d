"""`flywheel serve` and its embedded worker live and die together: the worker is restarted if
it dies (visible in /readyz and /metrics), and it stops by itself when the API process goes,
whether by SIGTERM or kill -9, so no orphan keeps polling the database."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.process.launch import flywheel_command, free_port, wait_until_up
from support import ADMIN, ADMIN_TOKEN
from support.waiting import wait_until

pytestmark = pytest.mark.faults

GIVE_UP_S = 120.0  # how long to wait before failing; not a performance claim


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (exited, not yet reaped by whoever adopted it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.fixture
def served(tmp_path: Path, tiny_model_dir: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_DATA_DIR=str(tmp_path / "data"), FLYWHEEL_BASE_MODEL=str(tiny_model_dir),
               FLYWHEEL_ADMIN_TOKEN=ADMIN_TOKEN, FLYWHEEL_WORKER_POLL_S="0.2", FLYWHEEL_TORCH_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(flywheel_command() + ["serve", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, alive=lambda: proc.poll() is None, timeout_s=GIVE_UP_S, path="/readyz",
                      logs=[tmp_path / "serve.log"])
        yield base, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(GIVE_UP_S)
        log.close()


def _worker(base: str) -> dict:
    return httpx.get(f"{base}/readyz", headers=ADMIN, timeout=30).json()["worker"]


def test_a_dead_worker_is_restarted_and_it_shows(served) -> None:
    base, _ = served
    first = _worker(base)
    assert first["embedded"] and first["alive"] and first["restarts"] == 0
    os.kill(first["pid"], signal.SIGKILL)
    wait_until(lambda: (w := _worker(base))["alive"] and w["pid"] != first["pid"], GIVE_UP_S,
               "the worker to be started again")
    again = _worker(base)
    assert again["restarts"] == 1 and again["last_exit"] == -signal.SIGKILL
    metrics = httpx.get(f"{base}/metrics", headers=ADMIN, timeout=30).text
    assert "flywheel_embedded_worker_up 1.0" in metrics
    assert "flywheel_embedded_worker_restarts_total 1.0" in metrics


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_the_worker_stops_when_the_api_process_goes(served, how: signal.Signals) -> None:
    base, proc = served
    worker_pid = _worker(base)["pid"]
    assert not _gone(worker_pid)
    proc.send_signal(how)
    proc.wait(GIVE_UP_S)
    wait_until(lambda: _gone(worker_pid), GIVE_UP_S, f"the worker (pid {worker_pid}) to exit after its API did")
