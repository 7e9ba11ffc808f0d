"""The admin side of `flywheel retrain`: queue a run over HTTP and follow it with a progress bar."""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

FINAL = {"promoted", "rejected", "failed"}


def request_retrain(http: httpx.Client, task: str) -> tuple[int, bool]:
    """(run id, whether this call created it).  A run already queued or running is reused."""
    r = http.post(f"/v1/tasks/{task}/retrain")
    if r.status_code == 409 and "run_id" in r.json():
        return int(r.json()["run_id"]), False
    if r.status_code != 202:
        body = r.json() if r.headers.get("content-type", "").endswith("json") else {"detail": r.text}
        raise SystemExit(f"retrain refused ({r.status_code}): {body.get('detail')}")
    return int(r.json()["run_id"]), True


def follow_run(http: httpx.Client, run_id: int, console: Console, poll_s: float = 1.0) -> dict[str, Any]:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        job = bar.add_task(f"run {run_id}", total=1.0, info="queued")
        while True:
            run = http.get(f"/v1/runs/{run_id}").raise_for_status().json()
            p = run.get("progress") or {}
            total = p.get("total_steps") or 0
            done = (p.get("step") or 0) / total if total else 0.0
            loss = p.get("loss")
            info = run["status"] + (f" epoch {p.get('epoch')} loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
            bar.update(job, completed=1.0 if run["status"] in FINAL else min(done, 0.99), info=info)
            if run["status"] in FINAL:
                return run
            time.sleep(poll_s)
