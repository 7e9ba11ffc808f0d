"""The parts of `flywheel bench serving`, one function each, and `PARTS`, the table that says
which the orchestration (`app/tools/bench/serving.py`) runs, in what order and where.

A part takes the run (`Run`: the config, the texts, the task, the servers' environment and,
for the parts that need it, the running SQLite server) and the set of part names asked for,
and returns the keys it adds to the result.  Parts marked `main_server` run while the first
server is up (in order); the others start what they need themselves, after it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from app.kinds import TaskKind
from app.process.launch import LocalService
from app.tools.bench.driving import TASK, batch_stats, drive, drive_until_stopped, ratio, server, setup_task, summarise
from app.tools.bench.inprocess import model_parts, trainer_vs_bare
from app.tools.bench.store import (bare_feedback_inserts, feedback_items, postgres_database, prefill_predictions,
                                   register_copy_of_active)
from app.tools.client import FlywheelClient
from app.tools.datasets import Record

CONCURRENCY = (1, 8, 32, 64)


@dataclass
class Run:
    """What the parts share.  `srv`, `api`, `key`, `labels` and `row` are the first (SQLite)
    server's, its bench client's key, the task's labels as it stored them and its active
    version; they stay valid (as values) after that server stopped."""

    kind: TaskKind  # the task's kind, which the data file's shape chose
    records: list[Record]  # in arrival order, the same for every part
    items: list[list[str]]  # one predict request per record: (path, JSON body) for the load generator
    task: dict[str, Any]  # the create-task body
    server_env: dict[str, str]
    admin_token: str
    tmp: Path
    requests: int
    feedback_requests: int
    swap_steady_s: float
    trainer_texts: int
    trainer_reps: int
    postgres_admin_url: str | None
    log: Callable[[str], None]
    srv: LocalService | None = None
    api: FlywheelClient | None = None
    key: str = ""
    labels: list[str] = field(default_factory=list)
    row: Any = None  # app.db.versions.ActiveRow of the task's active version

    @property
    def data_dir(self) -> Path:
        return self.tmp / "sqlite"

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'flywheel.db'}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def main_server(self) -> tuple[LocalService, FlywheelClient]:
        """The first server and its client, for the parts that run while it is up."""
        if self.srv is None or self.api is None:
            raise RuntimeError("this part runs on the first server, which is not up")
        return self.srv, self.api


# ---------------------------------------------------------------- the parts


def in_process(run: Run, want: set[str]) -> dict[str, Any]:
    """ceiling and int8: the model's forward in this process, while the server idles."""
    return model_parts(run.row, run.records, want, run.log)


def http(run: Run, want: set[str]) -> dict[str, Any]:
    """Predict over HTTP at each concurrency."""
    srv, api = run.main_server()
    return {"http": [http_run(srv, api, run.items, run.auth, c, run.requests, run.log) for c in CONCURRENCY]}


def swap(run: Run, want: set[str]) -> dict[str, Any]:
    """Activate a new version and roll back under load."""
    run.log("hot swap: activate a new version and roll back under c=32 load")
    srv, api = run.main_server()
    return {"swap": swap_under_load(api, srv.url, run.items, run.auth, run.sqlite_url, run.data_dir / "models",
                                    run.row.version, run.swap_steady_s)}


def feedback_sqlite(run: Run, want: set[str]) -> dict[str, Any]:
    """Feedback ingest on the first server's SQLite database."""
    run.log(f"feedback ingest on SQLite: {run.feedback_requests} requests at c=32")
    srv, _ = run.main_server()
    return {"feedback_sqlite": feedback_run(srv, run.sqlite_url, run.key, run.labels, run.feedback_requests)}


def naive(run: Run, want: set[str]) -> dict[str, Any]:
    """The same HTTP load on a server with batching off (one forward per request)."""
    env = {**run.server_env, "FLYWHEEL_BATCHING": "false"}
    with server(run.data_dir, env) as srv, FlywheelClient(srv.url, run.admin_token, timeout_s=300.0) as api:
        return {"naive": {str(c): http_run(srv, api, run.items, run.auth, c, run.requests, run.log,
                                           label="naive (batching off)") for c in (32, 64)}}


def postgres(run: Run, want: set[str]) -> dict[str, Any]:
    """Feedback ingest on a fresh PostgreSQL database, beside bare psycopg inserts of the same rows."""
    if not run.postgres_admin_url:
        return {}
    n = run.feedback_requests
    out: dict[str, Any] = {}
    try:
        with postgres_database(run.postgres_admin_url) as pg_url:
            run.log(f"feedback ingest on PostgreSQL (fresh database): {n} requests at c=32")
            with server(run.tmp / "pg", {**run.server_env, "FLYWHEEL_DATABASE_URL": pg_url}) as srv:
                with FlywheelClient(srv.url, run.admin_token, timeout_s=300.0) as api:
                    pg_key, _ = setup_task(api, run.task)
                out["feedback_postgres"] = feedback_run(srv, pg_url, pg_key, run.labels, n)
            run.log(f"bare psycopg inserts of the same rows at c=32: {n}")
            out["feedback_bare_postgres"] = bare_feedback_inserts(
                pg_url, prefill_predictions(pg_url, pg_key, n), run.labels, concurrency=32)
    except Exception as exc:
        run.log(f"PostgreSQL part skipped: {exc!r}"[:500])
        out["feedback_postgres"] = {"skipped": repr(exc)[:500]}
    return out


def trainer(run: Run, want: set[str]) -> dict[str, Any]:
    """`app.learning.trainer.fit` against a bare PyTorch loop over the same batches."""
    run.log(f"trainer vs bare PyTorch loop: {min(run.trainer_texts, len(run.records))} texts, best of {run.trainer_reps}")
    try:
        return {"trainer": trainer_vs_bare(Path(run.row.path), run.records[: run.trainer_texts], run.labels,
                                           run.trainer_reps, run.kind)}
    except ImportError as exc:
        return {"trainer": {"skipped": f"app.learning.trainer not available: {exc}"}}


@dataclass(frozen=True)
class Part:
    names: tuple[str, ...]  # what --parts calls it (one function may serve several names)
    run: Callable[[Run, set[str]], dict[str, Any]]
    main_server: bool  # runs while the first (SQLite) server is up


PARTS: tuple[Part, ...] = (
    Part(("ceiling", "int8"), in_process, main_server=True),
    Part(("http",), http, main_server=True),
    Part(("swap",), swap, main_server=True),
    Part(("feedback",), feedback_sqlite, main_server=True),
    Part(("naive",), naive, main_server=False),
    Part(("postgres",), postgres, main_server=False),
    Part(("trainer",), trainer, main_server=False),
)
PART_NAMES: tuple[str, ...] = tuple(name for part in PARTS for name in part.names)

# What a part needs of the task's kind, and what is missing when the kind lacks it; a part not
# named here runs for every kind.
_LABEL_ANSWERS = (lambda kind: kind.answers_are_labels, "its answers are not counted right against labels")
_LABEL_CORRECTIONS = (lambda kind: kind.labels_are_answers, "its labels are not answers to send as corrections")
NEEDS: dict[str, tuple[Callable[[TaskKind], bool], str]] = {
    "int8": _LABEL_ANSWERS, "trainer": _LABEL_ANSWERS,
    "feedback": _LABEL_CORRECTIONS, "postgres": _LABEL_CORRECTIONS,
}


def parts_for(kind: TaskKind, want: set[str]) -> tuple[set[str], dict[str, str]]:
    """(the parts of `want` that a task of this kind can run, why each other one cannot)."""
    skipped = {name: NEEDS[name][1] for name in want if name in NEEDS and not NEEDS[name][0](kind)}
    return want - set(skipped), skipped


# ---------------------------------------------------------------- what the parts measure with


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


def swap_under_load(api: FlywheelClient, url: str, items, auth, db_url: str, models_dir: Path,
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
