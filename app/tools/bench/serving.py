"""`flywheel bench serving`: how fast Flywheel serves, as ratios measured in one run.

1. Ceiling: the active model's batched forward in this process (the server's own
   `score_texts`, tokenisation included) at batch sizes 1, 8, 32, 64, on the same texts.
2. HTTP: `flywheel serve --no-worker` as a child process on loopback, driven by the light
   load generator (`app.tools.bench.loadgen`, another process) at concurrency 1, 8, 32, 64.
3. Naive: the same at c=32 and c=64 with FLYWHEEL_BATCHING=false (one forward per request).
4. Feedback ingest at c=32 on SQLite and on a fresh PostgreSQL database (dropped after).
5. Hot swap: activate a new version and roll back while c=32 load runs.
6. int8 dynamic quantisation: speed at batch 64 and zero-shot accuracy against fp32.
7. Trainer: `app.learning.trainer.fit` against a bare PyTorch loop over the same batches.

Each part is a function in `app/tools/bench/parts.py`, listed in its `PARTS` table; this
module reads the data, starts the first server, runs the parts asked for and derives the
ratios (`app/tools/bench/targets.py`).  Every number comes from this run on this machine;
the targets are reported, never assumed.
"""

from __future__ import annotations

import json
import random
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from app.tools.bench.driving import TASK, server, setup_task, wait_served_engine
from app.tools.bench.inprocess import setting_default
from app.tools.bench.machine import loadavg, machine_info, versions
from app.kinds import kind_for_data
from app.tools.bench.parts import PART_NAMES, PARTS, Run, parts_for
from app.tools.bench.store import active_row, prepare_active_engines
from app.tools.bench.targets import derive
from app.tools.client import FlywheelClient
from app.tools.datasets import find_shared, read_records, shape_of

DEFAULT_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass
class BenchConfig:
    csv: Path
    requests: int = 2000
    quick: bool = False
    threads: int = 0  # torch threads for this process and the servers; 0 = torch's default
    postgres_admin_url: str | None = DEFAULT_PG_ADMIN  # None: skip PostgreSQL
    max_texts: int | None = None  # use at most this many texts from the CSV
    trainer_texts: int = 256
    trainer_reps: int = 2
    feedback_requests: int = 3000
    swap_steady_s: float = 5.0
    parts: tuple[str, ...] = PART_NAMES
    log: Callable[[str], None] = print

    @classmethod
    def make(cls, *, csv_path: Path, requests: int | None, quick: bool, threads: int, postgres: str | None,
             parts: tuple[str, ...], log: Callable[[str], None]) -> "BenchConfig":
        if quick:
            return cls(csv=csv_path, requests=requests or 200, quick=True, threads=threads,
                       postgres_admin_url=postgres, max_texts=256, trainer_texts=64, trainer_reps=1,
                       feedback_requests=600, swap_steady_s=1.5, parts=parts, log=log)
        return cls(csv=csv_path, requests=requests or 2000, threads=threads, postgres_admin_url=postgres,
                   parts=parts, log=log)


def default_csv() -> Path | None:
    """SST-2 dev from the shared data folder beside the project (or the working directory)."""
    return find_shared("sst2", "dev.csv")


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Every part asked for (and that the task's kind allows), in the order of `PARTS`; the
    result with the derived ratios and the verdict on each target.  The data file's shape picks
    the kind, and the kind says what task its answers make."""
    import torch

    from app import __version__

    log = cfg.log
    started = time.monotonic()
    threads = cfg.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    records = read_records(cfg.csv)
    random.Random(0).shuffle(records)  # arrival order; the same for every part
    if cfg.max_texts:
        records = records[: cfg.max_texts]
    kind = kind_for_data(shape_of(cfg.csv))
    task = {"kind": kind.name, **kind.task_from_data([r.value for r in records])}
    want, skipped = parts_for(kind, set(cfg.parts))
    if skipped:
        log(f"a {kind.name} task: skipping {', '.join(sorted(skipped))} "
            f"({'; '.join(sorted(set(skipped.values())))})")
    res: dict[str, Any] = {
        "machine": machine_info(),
        "threads": threads,
        "versions": versions(__version__),
        "config": {"csv": str(cfg.csv), "texts": len(records), "task": task, "requests": cfg.requests,
                   "quick": cfg.quick, "parts": sorted(want), "max_batch_size": setting_default("max_batch_size"),
                   "max_wait_ms": setting_default("max_wait_ms"), "max_seq_len": setting_default("max_seq_len")},
    }
    admin_token = secrets.token_urlsafe(24)
    # Rate limits off: one client key drives thousands of requests a second on purpose.
    server_env = {"FLYWHEEL_ADMIN_TOKEN": admin_token, "FLYWHEEL_TORCH_THREADS": str(threads),
                  "FLYWHEEL_BASE_MODEL": _base_model(), "FLYWHEEL_RATE_LIMIT_PER_S": "0"}
    items = [[f"/v1/tasks/{TASK}/predict", json.dumps({"text": r.text})] for r in records]
    run = Run(kind=kind, records=records, items=items, task=task, server_env=server_env, admin_token=admin_token,
              tmp=Path(tempfile.mkdtemp(prefix="flywheel-bench-")), requests=cfg.requests,
              feedback_requests=cfg.feedback_requests, swap_steady_s=cfg.swap_steady_s, trainer_texts=cfg.trainer_texts,
              trainer_reps=cfg.trainer_reps, postgres_admin_url=cfg.postgres_admin_url, log=log,
              labels=list(task.get("labels", [])))
    chosen = [part for part in PARTS if want & set(part.names)]
    try:
        log(f"starting flywheel serve (SQLite, {threads} torch threads) …")
        with server(run.data_dir, server_env) as srv, FlywheelClient(srv.url, admin_token, timeout_s=300.0) as api:
            run.srv, run.api = srv, api
            run.key, run.labels = setup_task(api, task)
            res.update(prepare_engines(run, threads))
            run.row = active_row(run.sqlite_url)
            for part in (p for p in chosen if p.main_server):
                res.update(part.run(run, want))
        run.srv = run.api = None
        for part in (p for p in chosen if not p.main_server):
            res.update(part.run(run, want))
    finally:
        shutil.rmtree(run.tmp, ignore_errors=True)
    res["duration_s"] = time.monotonic() - started
    res["machine"]["loadavg_end"] = loadavg()
    return derive(res)


def prepare_engines(run: Run, threads: int) -> dict[str, Any]:
    """The active version's engines prepared as the worker does, and the one the server moved to."""
    run.log("engines: export, parity and timing, as the worker does before a version serves")
    record = prepare_active_engines(run.sqlite_url, run.data_dir, run.server_env["FLYWHEEL_BASE_MODEL"], threads)
    _, api = run.main_server()
    served = wait_served_engine(api, record)
    run.log(f"the server now serves {served} (chosen: {record.get('chosen')})")
    return {"engine_record": record, "served_engine": served}


def _base_model() -> str:
    from app.core.config import get_settings

    return get_settings().base_model


def write_json(d: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d, indent=2, default=str))
