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

Every number comes from this run on this machine; the targets are reported, never assumed.
"""

from __future__ import annotations

import csv
import math
import json
import os
import platform
import random
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from app.tools.bench.driving import TASK, batch_stats, drive, drive_until_stopped, ratio, setup_task, summarise
from app.tools.bench.inprocess import setting_default, model_parts, trainer_vs_bare
from app.tools.bench.store import (active_row, bare_feedback_inserts, feedback_items, postgres_database, prefill_predictions,
                              prepare_active_engines, register_copy_of_active)
from app.tools.client import FlywheelClient
from app.process.launch import LocalService

CONCURRENCY = (1, 8, 32, 64)
DEFAULT_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PARTS = ("ceiling", "int8", "http", "swap", "feedback", "naive", "postgres", "trainer")

TARGETS = {
    "http_c32_vs_ceiling_bs32": (">=", 0.90),
    "c64_vs_naive": (">=", 4.0),
    "p50_c1_vs_one_forward": ("<=", 1.2),
    "feedback_per_s_postgres": (">=", 1500.0),
    "feedback_p99_ms_postgres": ("<=", 50.0),
    "swap_failed_requests": ("<=", 0),
    "swap_p99_ratio": ("<=", 2.0),
    "int8_accuracy_drop_points": ("<=", 1.0),
    "served_engine_accuracy_drop_points": ("<=", 0.5),
    "feedback_ratio_to_bare_postgres": (">=", 0.5),
    "trainer_ratio_to_bare_loop": (">=", 0.95),
}


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
    parts: tuple[str, ...] = PARTS
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
    here = Path(__file__).resolve()
    for root in (Path.cwd(), Path.cwd().parent, here.parents[2], here.parents[3]):
        for cand in (root / "shared" / "data" / "sst2" / "dev.csv", root / "data" / "sst2" / "dev.csv"):
            if cand.is_file():
                return cand
    return None


def read_csv(path: Path) -> list[tuple[str, str]]:
    """(text, answer) rows of a `text,label` CSV (a classification), a `text,score` CSV (a rating)
    or JSON lines of {"text", "spans"} (a tagging; the answer is the spans' labels, joined)."""
    if path.suffix == ".jsonl":
        rows = [(r["text"], ",".join(sorted({s["label"] for s in r["spans"]})))
                for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r["text"].strip()]
        if not rows:
            raise ValueError(f"{path}: no rows")
        return rows
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        names = set(reader.fieldnames or [])
        column = "label" if "label" in names else "score"
        if "text" not in names or column not in names:
            raise ValueError(f"{path}: needs columns text,label or text,score (has {reader.fieldnames})")
        rows = [(r["text"].strip(), r[column].strip()) for r in reader if r["text"].strip()]
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def task_body(path: Path, rows: list[tuple[str, str]]) -> dict[str, Any]:
    """What the benchmark's task is: a classification over the CSV's labels, a rating on the
    whole numbers around a `score` column's values, or a tagging over a JSON lines file's labels."""
    if path.suffix == ".jsonl":
        return {"kind": "tagging", "labels": sorted({lab for _, labs in rows for lab in labs.split(",") if lab})}
    with path.open(newline="", encoding="utf-8") as fh:
        names = next(csv.reader(fh), [])
    if "label" in names:
        return {"labels": sorted({lab for _, lab in rows})}
    scores = [float(v) for _, v in rows]
    return {"kind": "rating", "range": [math.floor(min(scores)), math.ceil(max(scores))]}


# The parts that do not score labels (int8 and trainer do), per kind besides classification.
KIND_PARTS = {"rating": ("ceiling", "http", "naive", "swap", "feedback", "postgres"),
              "tagging": ("ceiling", "http", "naive", "swap")}


# ---------------------------------------------------------------- small statistics


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    import torch

    from app import __version__

    log = cfg.log
    started = time.monotonic()
    threads = cfg.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = read_csv(cfg.csv)
    random.Random(0).shuffle(rows)  # arrival order; the same for every part
    if cfg.max_texts:
        rows = rows[: cfg.max_texts]
    texts = [t for t, _ in rows]
    task = task_body(cfg.csv, rows)
    want = set(cfg.parts)
    allowed = set(KIND_PARTS.get(task.get("kind", "classification"), want))
    if want - allowed:
        log(f"a {task['kind']} task: skipping {', '.join(sorted(want - allowed))} (they need class labels)")
        want &= allowed
    labels = task.get("labels", [])
    res: dict[str, Any] = {
        "machine": machine_info(),
        "threads": threads,
        "versions": versions(__version__),
        "config": {"csv": str(cfg.csv), "texts": len(texts), "task": task, "requests": cfg.requests,
                   "quick": cfg.quick, "parts": sorted(want), "max_batch_size": setting_default("max_batch_size"),
                   "max_wait_ms": setting_default("max_wait_ms"), "max_seq_len": setting_default("max_seq_len")},
    }
    admin_token = secrets.token_urlsafe(24)
    # Rate limits off: one client key drives thousands of requests a second on purpose.
    server_env = {"FLYWHEEL_ADMIN_TOKEN": admin_token, "FLYWHEEL_TORCH_THREADS": str(threads),
                  "FLYWHEEL_BASE_MODEL": _base_model(), "FLYWHEEL_RATE_LIMIT_PER_S": "0"}
    items = [[f"/v1/tasks/{TASK}/predict", json.dumps({"text": t})] for t in texts]
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    try:
        data_dir = tmp / "sqlite"
        sqlite_url = f"sqlite:///{data_dir / 'flywheel.db'}"
        log(f"starting flywheel serve (SQLite, {threads} torch threads) …")
        with server(data_dir, server_env) as srv, FlywheelClient(srv.url, admin_token, timeout_s=300.0) as api:
            key, labels = setup_task(api, task)
            auth = {"Authorization": f"Bearer {key}"}
            log("engines: export, parity and timing, as the worker does before a version serves")
            record = prepare_active_engines(sqlite_url, data_dir, server_env["FLYWHEEL_BASE_MODEL"], threads)
            res["engine_record"] = record
            res["served_engine"] = wait_served_engine(api, record)
            log(f"the server now serves {res['served_engine']} (chosen: {record.get('chosen')})")
            row = active_row(sqlite_url)
            if want & {"ceiling", "int8"}:  # in this process, while the server idles
                res.update(model_parts(row, rows, want, log))
            if "http" in want:
                res["http"] = [http_run(srv, api, items, auth, c, cfg.requests, log) for c in CONCURRENCY]
            if "swap" in want:
                log("hot swap: activate a new version and roll back under c=32 load")
                res["swap"] = swap_under_load(api, srv.url, items, auth, sqlite_url, data_dir / "models",
                                              row.version, cfg.swap_steady_s)
            if "feedback" in want:
                log(f"feedback ingest on SQLite: {cfg.feedback_requests} requests at c=32")
                res["feedback_sqlite"] = feedback_run(srv, sqlite_url, key, labels, cfg.feedback_requests)

        if "naive" in want:
            naive_env = {**server_env, "FLYWHEEL_BATCHING": "false"}
            with server(data_dir, naive_env) as srv, FlywheelClient(srv.url, admin_token, timeout_s=300.0) as api:
                res["naive"] = {str(c): http_run(srv, api, items, auth, c, cfg.requests, log, label="naive (batching "
                                                 "off)") for c in (32, 64)}

        if "postgres" in want and cfg.postgres_admin_url:
            try:
                with postgres_database(cfg.postgres_admin_url) as pg_url:
                    log(f"feedback ingest on PostgreSQL (fresh database): {cfg.feedback_requests} requests at c=32")
                    with server(tmp / "pg", {**server_env, "FLYWHEEL_DATABASE_URL": pg_url}) as srv:
                        with FlywheelClient(srv.url, admin_token, timeout_s=300.0) as api:
                            pg_key, _ = setup_task(api, task)
                        res["feedback_postgres"] = feedback_run(srv, pg_url, pg_key, labels, cfg.feedback_requests)
                    log(f"bare psycopg inserts of the same rows at c=32: {cfg.feedback_requests}")
                    res["feedback_bare_postgres"] = bare_feedback_inserts(
                        pg_url, prefill_predictions(pg_url, pg_key, cfg.feedback_requests), labels, concurrency=32)
            except Exception as exc:  # noqa: BLE001 - reported; the rest of the run stands
                log(f"PostgreSQL part skipped: {exc!r}"[:500])
                res["feedback_postgres"] = {"skipped": repr(exc)[:500]}

        if "trainer" in want:
            log(f"trainer vs bare PyTorch loop: {min(cfg.trainer_texts, len(rows))} texts, best of {cfg.trainer_reps}")
            try:
                res["trainer"] = trainer_vs_bare(Path(row.path), rows[: cfg.trainer_texts], labels, cfg.trainer_reps)
            except ImportError as exc:
                res["trainer"] = {"skipped": f"app.learning.trainer not available: {exc}"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["duration_s"] = time.monotonic() - started
    res["machine"]["loadavg_end"] = _loadavg()
    return derive(res)


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


def http_run(srv: LocalService, api: FlywheelClient, items: list[list[str]], auth: dict[str, str], c: int,
             n: int, log: Callable[[str], None], label: str = "HTTP predict") -> dict[str, Any]:
    log(f"{label} c={c}: {n} requests")
    before = batch_stats(api.metrics())
    warm = max(2 * c, 16)
    drive(srv.url, items[-warm:], concurrency=c, count=warm, headers=auth)  # warm-up, not recorded
    cpu0 = srv.cpu_s()
    out = drive(srv.url, items, concurrency=c, count=n, headers=auth)
    cpu1 = srv.cpu_s()
    after = batch_stats(api.metrics())
    s = summarise(out["records"])
    s.update(concurrency=c, loadgen_cpu_share=out["cpu_s"] / out["wall_s"], loadgen_cpu_ms_per_request=
             1000 * out["cpu_s"] / max(1, len(out["records"])), mean_batch_texts=_mean_batch(before, after),
             server_cpu_ms_per_text=None if cpu0 is None or cpu1 is None else 1000 * (cpu1 - cpu0) / n)
    return s


def swap_under_load(api: FlywheelClient, url: str, items, auth, db_url: str, models_dir: Path,  # noqa: ANN001
                    old_version: int, steady_s: float) -> dict[str, Any]:
    new_version = register_copy_of_active(db_url, models_dir)
    windows = []
    with drive_until_stopped(url, items, concurrency=32, headers=auth) as out:
        t_start = time.monotonic()
        time.sleep(steady_s)
        for version in (new_version, old_version):  # roll forward, then roll back
            t0 = time.monotonic()
            api.activate(TASK, version)
            api.wait_served(TASK, version, poll_s=0.05)
            t1 = time.monotonic()
            time.sleep(1.0)  # the window runs on a second after the swap
            windows.append((version, t0, t1, time.monotonic()))
    records = out["records"]
    steady = [r for r in records if t_start + 0.5 <= r[0] < windows[0][1]]
    during = [r for r in records if any(t0 <= r[0] < end for _, t0, _, end in windows)]
    stale = 0
    for version, _, t1, end in windows:
        stale += sum(1 for r in records if t1 <= r[0] < end and r[3] is not None and r[3] != version)
    s_steady, s_swap, s_all = summarise(steady), summarise(during), summarise(records)
    return {
        "failed_requests": s_all["errors"],
        "requests": len(records),
        "steady_p99_ms": s_steady["p99_ms"],
        "swap_p99_ms": s_swap["p99_ms"],
        "swap_p99_ratio": ratio(s_swap["p99_ms"], s_steady["p99_ms"]),
        "swap_seconds": [round(t1 - t0, 3) for _, t0, t1, _ in windows],
        "versions": [old_version, new_version, old_version],
        "answers_by_version": _count_versions(records),
        "stale_answers_after_swap": stale,
        "loadgen_cpu_share": out["cpu_s"] / out["wall_s"],
    }


def feedback_run(srv: LocalService, db_url: str, key: str, labels: list[str], n: int) -> dict[str, Any]:
    warmup = 200
    ids = prefill_predictions(db_url, key, n + warmup)
    items = feedback_items(ids, labels)
    auth = {"Authorization": f"Bearer {key}"}
    drive(srv.url, items[:warmup], concurrency=32, count=warmup, headers=auth)
    cpu0 = srv.cpu_s()
    out = drive(srv.url, items[warmup:], concurrency=32, count=n, headers=auth)
    cpu1 = srv.cpu_s()
    s = summarise(out["records"])
    s["loadgen_cpu_share"] = out["cpu_s"] / out["wall_s"]
    s["server_cpu_ms_per_request"] = None if cpu0 is None or cpu1 is None else 1000 * (cpu1 - cpu0) / n
    return s


def _count_versions(records: list[list]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        if r[3] is not None:
            out[str(r[3])] = out.get(str(r[3]), 0) + 1
    return out


def _mean_batch(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    n = after[1] - before[1]
    return (after[0] - before[0]) / n if n else None


def _base_model() -> str:
    from app.core.config import get_settings

    return get_settings().base_model


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {k: os.environ[k] for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
           if k in os.environ}
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_start": _loadavg(), "env": env}


def versions(flywheel: str) -> dict[str, str]:
    import importlib.metadata as md

    out = {"flywheel": flywheel}
    for pkg in ("torch", "transformers", "fastapi", "uvicorn", "sqlalchemy", "psycopg", "uvloop", "httptools"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def derive(d: dict[str, Any]) -> dict[str, Any]:
    """The headline ratios and the verdict on each target."""
    http = {h["concurrency"]: h for h in d.get("http", [])}
    ceil = d.get("ceiling_texts_per_s", {})
    naive = d.get("naive", {})
    fb_pg, fb_sq = d.get("feedback_postgres") or {}, d.get("feedback_sqlite") or {}
    d["naive_texts_per_s_c32"] = (naive.get("32") or {}).get("texts_per_s")
    d["naive_texts_per_s_c64"] = (naive.get("64") or {}).get("texts_per_s")
    d["ratio_to_ceiling_c32"] = ratio((http.get(32) or {}).get("texts_per_s"), ceil.get("32"))
    # The same comparison in CPU time per text: robust to other work on the machine.
    d["cpu_ratio_to_ceiling_c32"] = ratio((d.get("ceiling_cpu_ms_per_text") or {}).get("32"),
                                          (http.get(32) or {}).get("server_cpu_ms_per_text"))
    d["speedup_vs_naive_c64"] = ratio((http.get(64) or {}).get("texts_per_s"), d["naive_texts_per_s_c64"])
    d["speedup_vs_naive_c32"] = ratio((http.get(32) or {}).get("texts_per_s"), d["naive_texts_per_s_c32"])
    # What batching alone can buy on this machine: the forward at 64 texts against 64 forwards of one.
    d["batching_bound_bs64_vs_bs1"] = ratio(ceil.get("64"), ceil.get("1"))
    d["p50_c1_ratio_to_forward"] = ratio((http.get(1) or {}).get("p50_ms"), d.get("one_forward_ms"))
    # The ceiling and the one forward above are the best engine's (inprocess.model_parts).
    d["ratio_to_best_engine_c32"] = d["ratio_to_ceiling_c32"]
    d["p50_c1_ratio_to_best_forward"] = d["p50_c1_ratio_to_forward"]
    d["feedback_ratio_to_bare_postgres"] = ratio(fb_pg.get("requests_per_s"),
                                                 (d.get("feedback_bare_postgres") or {}).get("requests_per_s"))
    engines = d.get("engines") or {}
    served = engines.get(d.get("served_engine") or "", {})
    d["served_engine_accuracy_delta_points"] = (None if "accuracy" not in served or "accuracy" not in
                                                engines.get("torch-fp32", {}) else
                                                served["accuracy"] - engines["torch-fp32"]["accuracy"])
    d["feedback_per_s_postgres"] = fb_pg.get("requests_per_s")
    d["feedback_p99_ms_postgres"] = fb_pg.get("p99_ms")
    d["feedback_per_s_sqlite"] = fb_sq.get("requests_per_s")
    d["feedback_p99_ms_sqlite"] = fb_sq.get("p99_ms")
    swap = d.get("swap") or {}
    d["swap_failed_requests"] = swap.get("failed_requests")
    d["swap_p99_ratio"] = swap.get("swap_p99_ratio")
    d["trainer_ratio_to_bare_loop"] = (d.get("trainer") or {}).get("ratio")
    delta = d.get("int8_accuracy_delta_points")
    measured = {
        "http_c32_vs_ceiling_bs32": d["ratio_to_ceiling_c32"],
        "c64_vs_naive": d["speedup_vs_naive_c64"],
        "p50_c1_vs_one_forward": d["p50_c1_ratio_to_forward"],
        "feedback_per_s_postgres": d["feedback_per_s_postgres"],
        "feedback_p99_ms_postgres": d["feedback_p99_ms_postgres"],
        "swap_failed_requests": d["swap_failed_requests"],
        "swap_p99_ratio": d["swap_p99_ratio"],
        "int8_accuracy_drop_points": None if delta is None else max(0.0, -delta),
        "served_engine_accuracy_drop_points": (None if d["served_engine_accuracy_delta_points"] is None else
                                               max(0.0, -d["served_engine_accuracy_delta_points"])),
        "feedback_ratio_to_bare_postgres": d["feedback_ratio_to_bare_postgres"],
        "trainer_ratio_to_bare_loop": d["trainer_ratio_to_bare_loop"],
    }
    targets = {}
    for name, (op, bound) in TARGETS.items():
        v = measured[name]
        met = None if v is None else (v >= bound if op == ">=" else v <= bound)
        targets[name] = {"value": v, "target": f"{op} {bound:g}", "met": met}
    d["targets"] = targets
    return d


def write_json(d: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d, indent=2, default=str))
