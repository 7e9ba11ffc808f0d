"""`flywheel bench serving`: how fast Flywheel serves, as ratios measured in one run.

1. Ceiling: the active model's batched forward in this process (the server's own
   `score_texts`, tokenisation included) at batch sizes 1, 8, 32, 64, on the same texts.
2. HTTP: `flywheel serve --no-worker` as a child process on loopback, driven by the light
   load generator (`app.bench.loadgen`, another process) at concurrency 1, 8, 32, 64.
3. Naive: the same at c=32 and c=64 with FLYWHEEL_BATCHING=false (one forward per request).
4. Feedback ingest at c=32 on SQLite and on a fresh PostgreSQL database (dropped after).
5. Hot swap: activate a new version and roll back while c=32 load runs.
6. int8 dynamic quantisation: speed at batch 64 and zero-shot accuracy against fp32.
7. Trainer: `app.learning.trainer.fit` against a bare PyTorch loop over the same batches.

Every number comes from this run on this machine; the targets are reported, never assumed.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from app.bench.server import Server

BATCH_SIZES = (1, 8, 32, 64)
CONCURRENCY = (1, 8, 32, 64)
TASK = "bench"
DEFAULT_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PARTS = ("ceiling", "int8", "http", "swap", "feedback", "naive", "postgres", "trainer")

TARGETS = {
    "http_c32_vs_ceiling_bs32": (">=", 0.90),
    "c64_vs_naive": (">=", 4.0),
    "p50_c1_vs_one_forward": ("<=", 1.2),
    "feedback_per_s_postgres": (">=", 2000.0),
    "feedback_p99_ms_postgres": ("<=", 50.0),
    "swap_failed_requests": ("<=", 0),
    "swap_p99_ratio": ("<=", 2.0),
    "int8_accuracy_drop_points": ("<=", 1.0),
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
    swap_steady_s: float = 3.0
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
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs columns text,label (has {reader.fieldnames})")
        rows = [(r["text"].strip(), r["label"].strip()) for r in reader if r["text"].strip()]
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


# ---------------------------------------------------------------- small statistics


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
        out = subprocess.run([sys.executable, "-m", "app.bench.loadgen", str(spec)], capture_output=True,
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
        proc = subprocess.Popen([sys.executable, "-m", "app.bench.loadgen", str(spec)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            yield result
        finally:
            out, err = proc.communicate(input="", timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed: {err[-2000:]}")
        result.update(json.loads(out))


@contextmanager
def _spec_file(url: str, items, concurrency, count, warmup, headers) -> Iterator[Path]:  # noqa: ANN001
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


class Api:
    """The few admin and client calls the benchmark makes."""

    def __init__(self, url: str, admin_token: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {admin_token}"})

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def setup_task(self, labels: list[str]) -> str:
        """Create the task (zero-shot version 0) and a client; the client's key."""
        self.call("POST", "/v1/tasks", json={"name": TASK, "labels": labels})
        return self.call("POST", "/v1/clients", json={"name": "bench"})["key"]

    def served_version(self) -> int | None:
        r = self.http.get("/readyz")
        return r.json().get("models", {}).get(TASK) if r.status_code == 200 else None

    def wait_version(self, version: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while self.served_version() != version:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not swap to version {version} in {timeout_s:.0f}s")
            time.sleep(0.05)

    def batch_stats(self) -> tuple[float, float]:
        """(sum, count) of the texts-per-forward histogram."""
        total = count = 0.0
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith("flywheel_batch_texts_sum") and f'task="{TASK}"' in line:
                total = float(line.rsplit(" ", 1)[1])
            elif line.startswith("flywheel_batch_texts_count") and f'task="{TASK}"' in line:
                count = float(line.rsplit(" ", 1)[1])
        return total, count


def db_sessions(url: str):  # noqa: ANN201
    from app.db.session import make_engine, make_sessionmaker

    engine = make_engine(url)
    return engine, make_sessionmaker(engine)


def prefill_predictions(db_url: str, client_key: str, n: int) -> list[str]:
    """Stored predictions of the bench client (inserted directly: feedback needs targets, not forwards)."""
    from sqlalchemy import insert, select

    from app.db.models import Client, ModelVersion, Prediction, Task, new_id, utcnow
    from app.security import hash_api_key

    engine, sessions = db_sessions(db_url)
    try:
        with sessions() as s, s.begin():
            task_id = s.scalar(select(Task.id).where(Task.name == TASK))
            mv_id = s.scalar(select(ModelVersion.id).where(ModelVersion.task_id == task_id,
                                                           ModelVersion.status == "active"))
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


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server of `admin_url`, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"flywheel_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# ---------------------------------------------------------------- in-process model work


def active_row(db_url: str):  # noqa: ANN201
    from app.serving.registry import active_rows

    engine, sessions = db_sessions(db_url)
    try:
        with sessions() as s:
            return next(r for r in active_rows(s) if r.task == TASK)
    finally:
        engine.dispose()


def ceiling(loaded, texts: list[str], sizes: tuple[int, ...], *,  # noqa: ANN001
            bs1_texts: int) -> tuple[dict[int, float], dict[int, float]]:
    """texts/s and CPU ms per text of the server's own forward (`score_texts`) on consecutive
    groups of the texts (arrival order, as a full micro-batch would see them)."""
    from app.serving.registry import score_texts

    wall, cpu = {}, {}
    for bs in sizes:
        use = texts[:bs1_texts] if bs == 1 else texts
        score_texts(loaded, use[:bs], chunk=bs)  # warm this shape
        started, cpu0 = time.perf_counter(), time.process_time()
        for i in range(0, len(use), bs):
            score_texts(loaded, use[i:i + bs], chunk=bs)
        wall[bs] = len(use) / (time.perf_counter() - started)
        cpu[bs] = 1000 * (time.process_time() - cpu0) / len(use)
    return wall, cpu


def one_forward_ms(loaded, texts: list[str], n: int) -> float:  # noqa: ANN001
    """Median wall time of one single-text forward (the bare cost a c=1 request cannot avoid)."""
    from app.serving.registry import score_texts

    times = []
    for t in texts[:n]:
        started = time.perf_counter()
        score_texts(loaded, [t], chunk=1)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def accuracy(loaded, rows: list[tuple[str, str]], bs: int = 64) -> tuple[float, float]:  # noqa: ANN001
    """(accuracy in points, texts/s) of zero-shot predictions against the CSV's labels."""
    from app.serving.registry import score_texts

    texts = [t for t, _ in rows]
    score_texts(loaded, texts[:bs], chunk=bs)
    started = time.perf_counter()
    got = []
    for i in range(0, len(texts), bs):
        got += [s.label for s in score_texts(loaded, texts[i:i + bs], chunk=bs)]
    speed = len(texts) / (time.perf_counter() - started)
    return 100.0 * sum(g == lab for g, (_, lab) in zip(got, rows)) / len(rows), speed


def trainer_vs_bare(path: Path, rows: list[tuple[str, str]], labels: list[str], reps: int) -> dict[str, Any]:
    """texts/s of `trainer.fit` (one epoch) and of a bare PyTorch loop over the same batches."""
    import torch
    import torch.nn.functional as F

    from app.learning import trainer as tr
    from app.learning.data import Item
    from app.serving.artifacts import load_version

    cpu = torch.device("cpu")
    items = [Item(text=t, label=labels.index(lab)) for t, lab in rows]
    cfg = tr.TrainConfig(epochs=1, batch_size=16, lambda_data=1.0, device="cpu", max_len=128,
                         progress_every_s=3600.0, seed=0)

    def run_trainer() -> float:
        model, tok, _ = load_version(path, device=cpu)
        state = tr.setup(model, tok, items, [], cfg)
        first = tr.make_batches(state.train_rows, cfg.batch_size, state.pad_id, random.Random(99))[0]
        tr.train_step(state, first)  # warm-up step, outside the clock (the bare loop gets one too)
        started = time.perf_counter()
        result = tr.fit(state)
        elapsed = time.perf_counter() - started
        return len(state.train_rows) * result.epochs_run / elapsed

    def run_bare() -> float:
        model, tok, _ = load_version(path, device=cpu)
        rows_ = tr.encode(tok, items, cfg.max_len)
        pad = tok.pad_token_id or 0
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def step(b) -> None:  # noqa: ANN001
            logits = model(b.input_ids, b.attention_mask)
            loss = F.cross_entropy(logits, b.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or 1.0)
            opt.step()

        step(tr.make_batches(rows_, cfg.batch_size, pad, random.Random(99))[0])
        started = time.perf_counter()
        for b in tr.make_batches(rows_, cfg.batch_size, pad, random.Random(cfg.seed)):  # fit's epoch-1 batches
            step(b)
        return len(rows_) / (time.perf_counter() - started)

    trainer_runs, bare_runs = [], []
    for _ in range(reps):  # interleaved, so drifting background load hits both alike
        trainer_runs.append(run_trainer())
        bare_runs.append(run_bare())
    best_t, best_b = max(trainer_runs), max(bare_runs)
    return {"trainer_texts_per_s": best_t, "bare_loop_texts_per_s": best_b, "ratio": best_t / best_b,
            "texts": len(rows), "batch_size": cfg.batch_size, "reps": reps,
            "trainer_runs": trainer_runs, "bare_runs": bare_runs}


def register_copy_of_active(db_url: str, models_dir: Path) -> int:
    """A second version: the active model saved again under a new name (so the swap is a real load)."""
    import torch

    from app.db.models import Task
    from app.serving.artifacts import load_version, save_version
    from app.versions import next_version_number, register_version

    row = active_row(db_url)
    model, tok, meta = load_version(Path(row.path), device=torch.device("cpu"))
    engine, sessions = db_sessions(db_url)
    try:
        with sessions() as s:
            version = next_version_number(s, row.task_id)
        path, sha = save_version(model, tok, meta, models_dir / TASK, f"v{version}")  # no transaction open
        with sessions() as s, s.begin():
            register_version(s, task=s.get(Task, row.task_id), path=path, sha256=sha, version=version,
                             status="candidate", parent_id=row.version_id,
                             metrics={"bench": "copy of the active version"})
        return version
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the run


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
    labels = sorted({lab for _, lab in rows})
    want = set(cfg.parts)
    res: dict[str, Any] = {
        "machine": machine_info(),
        "threads": threads,
        "versions": versions(__version__),
        "config": {"csv": str(cfg.csv), "texts": len(texts), "labels": labels, "requests": cfg.requests,
                   "quick": cfg.quick, "parts": sorted(want), "max_batch_size": _setting("max_batch_size"),
                   "max_wait_ms": _setting("max_wait_ms"), "max_seq_len": _setting("max_seq_len")},
    }
    admin_token = secrets.token_urlsafe(24)
    server_env = {"FLYWHEEL_ADMIN_TOKEN": admin_token, "FLYWHEEL_TORCH_THREADS": str(threads),
                  "FLYWHEEL_BASE_MODEL": _base_model()}
    items = [[f"/v1/tasks/{TASK}/predict", json.dumps({"text": t})] for t in texts]
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    try:
        data_dir = tmp / "sqlite"
        sqlite_url = f"sqlite:///{data_dir / 'flywheel.db'}"
        log(f"starting flywheel serve (SQLite, {threads} torch threads) …")
        with Server(data_dir, env=server_env) as srv:
            api = Api(srv.url, admin_token)
            key = api.setup_task(labels)
            auth = {"Authorization": f"Bearer {key}"}
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
            api.close()

        if "naive" in want:
            with Server(data_dir, env={**server_env, "FLYWHEEL_BATCHING": "false"}) as srv:
                api = Api(srv.url, admin_token)
                res["naive"] = {str(c): http_run(srv, api, items, auth, c, cfg.requests, log, label="naive (batching "
                                                 "off)") for c in (32, 64)}
                api.close()

        if "postgres" in want and cfg.postgres_admin_url:
            try:
                with postgres_database(cfg.postgres_admin_url) as pg_url:
                    log(f"feedback ingest on PostgreSQL (fresh database): {cfg.feedback_requests} requests at c=32")
                    with Server(tmp / "pg", env={**server_env, "FLYWHEEL_DATABASE_URL": pg_url}) as srv:
                        api = Api(srv.url, admin_token)
                        pg_key = api.setup_task(labels)
                        api.close()
                        res["feedback_postgres"] = feedback_run(srv, pg_url, pg_key, labels, cfg.feedback_requests)
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


def model_parts(row, rows: list[tuple[str, str]], want: set[str], log: Callable[[str], None]) -> dict[str, Any]:  # noqa: ANN001
    """Ceiling forward (wall and CPU time per text) and int8 against fp32, in this process."""
    from dataclasses import replace

    import torch

    from app.serving.registry import load_for_serving

    cpu, max_len = torch.device("cpu"), _setting("max_seq_len")
    texts = [t for t, _ in rows]
    out: dict[str, Any] = {}
    # Load (and warm) here, forward on a single inference thread, exactly as the server does.
    # It matters on CPU: libgomp spins 300,000 times at every barrier while a process has no
    # more OpenMP threads than cores, and throttles to 100 once it has more (two threads that
    # ran torch ops, like the server's loader and inference threads).  The spinning version
    # collapses the moment anything else wants a core, so a ceiling measured on this process's
    # main thread alone would not be the server's forward.
    infer = ThreadPoolExecutor(1, thread_name_prefix="infer")
    loaded = load_for_serving(row, device=cpu, max_len=max_len)
    if "ceiling" in want:
        log("ceiling: in-process forward at batch sizes " + ", ".join(map(str, BATCH_SIZES)))
        wall, cpu_ms = infer.submit(ceiling, loaded, texts, BATCH_SIZES, bs1_texts=min(len(texts), 200)).result()
        out["ceiling_texts_per_s"] = {str(k): v for k, v in wall.items()}
        out["ceiling_cpu_ms_per_text"] = {str(k): v for k, v in cpu_ms.items()}
        out["one_forward_ms"] = infer.submit(one_forward_ms, loaded, texts, min(len(texts), 100)).result()
    if "int8" in want:
        log("int8: zero-shot accuracy and speed against fp32")
        acc32, speed32 = infer.submit(accuracy, loaded, rows).result()
        q = load_for_serving(replace(row, quantize=True), device=cpu, max_len=max_len)
        acc8, speed8 = infer.submit(accuracy, q, rows).result()
        out["int8"] = {"accuracy_fp32": acc32, "accuracy_int8": acc8, "texts_per_s_fp32_bs64": speed32,
                       "texts_per_s_int8_bs64": speed8, "texts": len(rows)}
        out["int8_speedup_bs64"] = speed8 / speed32
        out["int8_accuracy_delta_points"] = acc8 - acc32
    infer.shutdown()
    return out


def http_run(srv: Server, api: Api, items: list[list[str]], auth: dict[str, str], c: int, n: int,
             log: Callable[[str], None], label: str = "HTTP predict") -> dict[str, Any]:
    log(f"{label} c={c}: {n} requests")
    before = api.batch_stats()
    warm = max(2 * c, 16)
    drive(srv.url, items[-warm:], concurrency=c, count=warm, headers=auth)  # warm-up, not recorded
    cpu0 = srv.cpu_s()
    out = drive(srv.url, items, concurrency=c, count=n, headers=auth)
    cpu1 = srv.cpu_s()
    after = api.batch_stats()
    s = summarise(out["records"])
    s.update(concurrency=c, loadgen_cpu_share=out["cpu_s"] / out["wall_s"], loadgen_cpu_ms_per_request=
             1000 * out["cpu_s"] / max(1, len(out["records"])), mean_batch_texts=_mean_batch(before, after),
             server_cpu_ms_per_text=None if cpu0 is None or cpu1 is None else 1000 * (cpu1 - cpu0) / n)
    return s


def swap_under_load(api: Api, url: str, items, auth, db_url: str, models_dir: Path, old_version: int,  # noqa: ANN001
                    steady_s: float) -> dict[str, Any]:
    new_version = register_copy_of_active(db_url, models_dir)
    windows = []
    with drive_until_stopped(url, items, concurrency=32, headers=auth) as out:
        t_start = time.monotonic()
        time.sleep(steady_s)
        for version in (new_version, old_version):  # roll forward, then roll back
            t0 = time.monotonic()
            api.call("POST", f"/v1/tasks/{TASK}/models/{version}/activate")
            api.wait_version(version)
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


def feedback_run(srv: Server, db_url: str, key: str, labels: list[str], n: int) -> dict[str, Any]:
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
    from app.config import get_settings

    return get_settings().base_model


def _setting(name: str) -> Any:
    from app.config import Settings

    return Settings.model_fields[name].default


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
