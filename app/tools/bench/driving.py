"""Driving a running Flywheel from outside: the load generator's runs, their statistics, the
child server the benchmark starts, and the task setup and batch statistics it reads (over
app.tools.client)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from app.process.launch import LocalService
from app.tools.client import FlywheelClient

TASK = "bench"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarise(records: list[list], texts_per_request: int = 1) -> dict[str, Any]:
    ok = [r for r in records if 200 <= r[2] < 300]
    lat = [r[1] * 1000 for r in ok]
    if records:
        span = max(r[0] + r[1] for r in records) - min(r[0] for r in records)
    else:
        span = 0.0
    return {
        "requests": len(records),
        "errors": len(records) - len(ok),
        "texts_per_s": len(ok) * texts_per_request / span if span > 0 else 0.0,
        "requests_per_s": len(ok) / span if span > 0 else 0.0,
        "p50_ms": pct(lat, 50),
        "p95_ms": pct(lat, 95),
        "p99_ms": pct(lat, 99),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# ---------------------------------------------------------------- the load generator


def drive(url: str, items: list[list[str]], *, concurrency: int, count: int, warmup: int = 0,
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the load generator to completion; its records and CPU use."""
    with _spec_file(url, items, concurrency, count, warmup, headers) as spec:
        out = subprocess.run([sys.executable, "-m", "app.tools.bench.loadgen", str(spec)], capture_output=True,
                             text=True, timeout=1800, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


@contextmanager
def drive_until_stopped(url: str, items: list[list[str]], *, concurrency: int,
                        headers: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Load runs for as long as the `with` body does; the result dict is filled on exit."""
    result: dict[str, Any] = {}
    with _spec_file(url, items, concurrency, 0, 0, headers) as spec:
        proc = subprocess.Popen([sys.executable, "-m", "app.tools.bench.loadgen", str(spec)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            yield result
        finally:
            out, err = proc.communicate(input="", timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed: {err[-2000:]}")
        result.update(json.loads(out))


@contextmanager
def _spec_file(url: str, items, concurrency, count, warmup, headers) -> Iterator[Path]:
    host, port = url.removeprefix("http://").split(":")
    fd, name = tempfile.mkstemp(suffix=".json", prefix="flywheel-loadgen-")
    with os.fdopen(fd, "w") as fh:
        json.dump({"host": host, "port": int(port), "items": items, "concurrency": concurrency, "count": count,
                   "warmup": warmup, "headers": headers or {}}, fh)
    try:
        yield Path(name)
    finally:
        os.unlink(name)


# ---------------------------------------------------------------- the service


def wait_served_engine(api: FlywheelClient, record: dict[str, Any], timeout_s: float = 120.0) -> str | None:
    """The engine the server's watcher moves the task to once the record is stored."""
    want = record.get("chosen")
    deadline = time.monotonic() + timeout_s
    engine = None
    while time.monotonic() < deadline:
        engine = api.http.get("/readyz").json().get("engines", {}).get(TASK)
        if want is None or engine == want:
            break
        time.sleep(0.2)
    return engine


def server(data_dir: Path, env: dict[str, str]) -> LocalService:
    """`flywheel serve --no-worker` on a free loopback port with its own data directory.  Every
    FLYWHEEL_* variable of the caller is dropped (app.process.launch does), so the numbers come from the
    defaults plus what the benchmark sets on purpose."""
    return LocalService(data_dir, env={"FLYWHEEL_LOG_LEVEL": "warning", **env}, startup_timeout_s=300.0,
                        stop_timeout_s=60.0)


def setup_task(api: FlywheelClient, body: dict[str, Any]) -> tuple[str, list[str]]:
    """Create the task (zero-shot version 0; `body` says its kind and labels or range) and a
    client; (the client's key, the task's labels as the server stored them: for a kind that
    answers on a scale, its points)."""
    created = api.create_task({"name": TASK, **body})
    return api.create_client("bench", [TASK]), list(created["labels"])


def batch_stats(metrics: str, task: str = TASK) -> tuple[float, float]:
    """(sum, count) of the texts-per-forward histogram in /metrics text."""
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith("flywheel_batch_texts_sum") and f'task="{task}"' in line:
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("flywheel_batch_texts_count") and f'task="{task}"' in line:
            count = float(line.rsplit(" ", 1)[1])
    return total, count
