"""Serving through real parts: the app over real HTTP (uvicorn in a thread, the tiny model,
SQLite and PostgreSQL), the model registry's hot swap, and int8 quantisation.  No timing
thresholds anywhere: a slow or held forward is used to make requests queue, never to judge
speed, and every wait is for a named condition with a deadline that only stops a hang."""

from __future__ import annotations

import copy
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from sqlalchemy import select

from app.core.config import Settings
from app.db.tables import ModelVersion, Prediction, Task
from app.db.session import make_engine, make_sessionmaker
from app.db.versions import register_version
from app.kinds import load_version
from app.kinds.classification import Classification, build_zero_shot, predict_proba
from app.model.store import save_version
from app.serving.scoring import prepare_for_inference
from app.serving.registry import ServedModels
from support import ADMIN, make_settings
from support.waiting import wait_until
from support.live import serve_in_thread

LABELS = ["billing", "card_lost", "weather"]
TEXTS = [
    "I lost my credit card", "my card was stolen", "will it rain tomorrow", "the weather is cold today",
    "I was charged twice", "why is my bill so high", "refund the fee please", "sunny and hot",
    "where is my wallet", "please help me find my lost card", "what about snow", "invoice payment",
    "the movie was great", "terrible acting and a boring plot", "can you tell me the forecast",
    "my bank account was charged", "i need a refund", "wind and rain today", "i hate this bill", "good",
]


GIVE_UP_S = 60.0  # how long to wait for something before failing the test; never a performance claim


def none_failed(futures: list[Future]) -> bool:
    """True; a future that already finished (it should run until told to stop) raises its
    exception here, or fails the test if it returned early."""
    for f in futures:
        if f.done():
            f.result(timeout=0)
            pytest.fail("a client thread stopped before it was told to")
    return True


class ForwardGate:
    """Holds the first forward that starts after `arm()` until `release()`, so requests pile
    up behind a model that is certainly busy; `entered` says the forward is being held."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed, self.entered, self.released = threading.Event(), threading.Event(), threading.Event()
        real = ServedModels.forward
        gate = self

        def forward(self, task, texts):
            if gate.armed.is_set() and not gate.entered.is_set():  # one inference thread per task
                gate.entered.set()
                if not gate.released.wait(GIVE_UP_S):
                    raise RuntimeError("the test never released the held forward")
            return real(self, task, texts)

        monkeypatch.setattr(ServedModels, "forward", forward)

    def arm(self) -> None:
        self.armed.set()

    def release(self) -> None:
        self.released.set()


def slow_forward(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every forward takes at least `seconds`, so requests pile up behind it."""
    real = ServedModels.forward

    def forward(self, task, texts):
        time.sleep(seconds)
        return real(self, task, texts)

    monkeypatch.setattr(ServedModels, "forward", forward)


def create_task(http: httpx.Client, **extra) -> dict:
    r = http.post("/v1/tasks", json={"name": "tickets", "labels": LABELS, **extra})
    assert r.status_code == 201, r.text
    return r.json()


# ---------------------------------------------------------------- overload over HTTP


def test_a_full_queue_answers_503_with_retry_after_not_a_hang(
    tmp_path: Path, db_url: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "data", db_url, tiny_model_dir, max_queue=1, max_wait_ms=0)
    gate = ForwardGate(monkeypatch)
    with serve_in_thread(settings) as base, httpx.Client(base_url=base, headers=ADMIN, timeout=60) as http:
        create_task(http)

        def call(i: int) -> httpx.Response:
            return http.post("/v1/tasks/tickets/predict", json={"text": f"text {i}"})

        pool = ThreadPoolExecutor(8)
        try:
            gate.arm()
            calls = [pool.submit(call, i) for i in range(8)]
            assert gate.entered.wait(GIVE_UP_S), "no request reached the model"
            # The model is held: one request in the forward, at most one text queued; the rest are
            # turned away at once instead of waiting.
            wait_until(lambda: any(f.done() for f in calls), GIVE_UP_S,
                       "a request to be answered while the model was busy and the queue full")
            early = [f.result(timeout=0).status_code for f in calls if f.done()]
            assert set(early) == {503}, early
        finally:
            gate.release()
            pool.shutdown(wait=False)
        answers = [f.result(timeout=GIVE_UP_S) for f in calls]
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) <= {200, 503}, statuses
        assert 503 in statuses and 200 in statuses, statuses
        for r in answers:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["type"].endswith("overloaded")
        metrics = http.get("/metrics").text
        assert 'flywheel_queue_rejections_total{task="tickets"}' in metrics
    engine = make_engine(settings.db_url)
    with make_sessionmaker(engine)() as s:  # exactly the answered requests were stored
        assert len(s.scalars(select(Prediction)).all()) == statuses.count(200)
    engine.dispose()


# ---------------------------------------------------------------- hot swap under load


def _register_copy(settings: Settings) -> int:
    """A second version of the task: the active model saved again under a new name."""
    engine = make_engine(settings.db_url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions() as s:
            task = s.scalar(select(Task).where(Task.name == "tickets"))
            active = s.scalar(select(ModelVersion).where(ModelVersion.task_id == task.id,
                                                         ModelVersion.status == "active"))
        model, tok, meta = load_version(Path(active.path), device=torch.device("cpu"))
        path, sha = save_version(model, tok, meta, settings.models_dir / "tickets", "v1")
        with sessions() as s, s.begin():
            register_version(s, task=s.get(Task, task.id), path=path, sha256=sha, version=1, parent_id=active.id)
        return 1
    finally:
        engine.dispose()


def test_hot_swap_while_requests_are_queued_fails_none_and_later_answers_carry_the_new_version(
    tmp_path: Path, db_url: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "data", db_url, tiny_model_dir, watch_interval_s=0.05, max_batch_size=4)
    slow_forward(monkeypatch, 0.05)
    with serve_in_thread(settings) as base, httpx.Client(base_url=base, headers=ADMIN, timeout=60) as http:
        create_task(http)
        new_version = _register_copy(settings)
        stop = threading.Event()
        answers: list[tuple[float, int, dict, float]] = []  # (sent at, status, body, answered at)
        lock = threading.Lock()

        def caller(i: int) -> int:
            n = 0
            while not stop.is_set():
                sent = time.monotonic()
                r = http.post("/v1/tasks/tickets/predict", json={"text": f"caller {i} says {TEXTS[n % 20]}"})
                with lock:
                    answers.append((sent, r.status_code, r.json(), time.monotonic()))
                n += 1
            return n

        def answered_since(t: float, n: int = 16) -> bool:
            """`n` requests sent after `t` are answered, and every caller is still going."""
            none_failed(callers)
            with lock:
                return sum(1 for a in answers if a[0] > t) >= n

        def serving(version: int) -> bool:
            none_failed(callers)
            return http.get("/readyz").json()["models"].get("tickets") == version

        pool = ThreadPoolExecutor(8)
        callers = [pool.submit(caller, i) for i in range(8)]
        try:
            # load is on and requests queue behind the slow forward
            wait_until(lambda: answered_since(float("-inf")), GIVE_UP_S, "16 answers before the swap")
            assert http.post(f"/v1/tasks/tickets/models/{new_version}/activate").status_code == 200
            wait_until(lambda: serving(new_version), GIVE_UP_S, "the API to swap to the new version")
            swapped_at = time.monotonic()
            wait_until(lambda: answered_since(swapped_at), GIVE_UP_S, "16 requests sent after the swap answered")
            rollback_asked_at = time.monotonic()
            assert http.post("/v1/tasks/tickets/models/0/activate").status_code == 200  # and roll back
            wait_until(lambda: serving(0), GIVE_UP_S, "the API to roll back to version 0")
            rolled_back_at = time.monotonic()
            wait_until(lambda: answered_since(rolled_back_at), GIVE_UP_S,
                       "16 requests sent after the rollback answered")
        finally:
            stop.set()
            pool.shutdown(wait=False)
        sent_per_caller = [f.result(timeout=GIVE_UP_S) for f in callers]  # a caller's exception surfaces here
        assert sum(sent_per_caller) == len(answers)

    statuses = [a[1] for a in answers]
    assert statuses.count(200) == len(statuses), [a[2] for a in answers if a[1] != 200][:3]
    assert {a[2]["model_version"] for a in answers} == {0, new_version}
    between = [a[2]["model_version"] for a in answers if a[0] > swapped_at and a[3] < rollback_asked_at]
    after = [a[2]["model_version"] for a in answers if a[0] > rolled_back_at]
    assert between and set(between) == {new_version}
    assert after and set(after) == {0}

    engine = make_engine(settings.db_url)  # every row names the version that really answered
    with make_sessionmaker(engine)() as s:
        version_of = dict(s.execute(select(ModelVersion.id, ModelVersion.version)).all())
        stored = {p.id: version_of[p.model_version_id] for p in s.scalars(select(Prediction))}
    engine.dispose()
    assert len(stored) == len(answers)
    for a in answers:
        assert stored[a[2]["predictions"][0]["id"]] == a[2]["model_version"]


# ---------------------------------------------------------------- int8


def test_int8_dynamic_quantisation_agrees_with_fp32_on_most_texts(tiny_model_dir: Path) -> None:
    model, tok = build_zero_shot(str(tiny_model_dir), LABELS)
    cpu = torch.device("cpu")
    q, quantized = prepare_for_inference(copy.deepcopy(model), cpu, quantize=True)
    assert quantized
    assert not any(type(m) is torch.nn.Linear for m in q.encoder.modules())  # every Linear was replaced
    p32 = predict_proba(model, tok, TEXTS, max_len=32, device=cpu)
    p8 = predict_proba(q, tok, TEXTS, max_len=32, device=cpu)
    agree = (p32.argmax(-1) == p8.argmax(-1)).float().mean().item()
    assert agree >= 0.8, agree
    assert torch.allclose(p8.sum(-1), torch.ones(len(TEXTS)), atol=1e-4)


def test_a_task_with_quantize_serves_the_int8_model(tmp_path: Path, sqlite_url: str, tiny_model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = make_settings(tmp_path / "data", sqlite_url, tiny_model_dir)
    with TestClient(create_app(settings)) as client:
        client.headers.update(ADMIN)
        r = client.post("/v1/tasks", json={"name": "tickets", "labels": LABELS, "quantize": True})
        assert r.status_code == 201, r.text
        r = client.post("/v1/tasks/tickets/predict", json={"texts": TEXTS[:5]})
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 5
        assert client.app.state.flywheel.served.current("tickets").quantized


# ---------------------------------------------------------------- chunking


def test_chunks_respect_rows_and_padded_tokens() -> None:
    from app.serving.scoring import chunk_bounds

    lengths = [3, 4, 4, 5, 9, 10, 30, 31]
    bounds = chunk_bounds(lengths, max_rows=3, max_tokens=24)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, nothing lost
    for start, end in bounds:
        assert end - start <= 3
        assert end - start == 1 or (end - start) * lengths[end - 1] <= 24
    assert chunk_bounds([50, 60], max_rows=8, max_tokens=10) == [(0, 1), (1, 2)]  # one long row still goes
    assert chunk_bounds([5] * 10, max_rows=4, max_tokens=None) == [(0, 4), (4, 8), (8, 10)]


def test_chunked_scoring_matches_one_padded_block(tiny_model_dir: Path) -> None:
    from app.serving.scoring import LoadedModel, score_texts

    model, tok = build_zero_shot(str(tiny_model_dir), LABELS)
    loaded = LoadedModel(task_id=1, task="t", version_id=1, version=0, kind=Classification(), labels=LABELS,
                         model=model, tokenizer=tok, device=torch.device("cpu"), max_len=32)
    small = score_texts(loaded, TEXTS, chunk=64, max_tokens=40)  # many small chunks
    block = score_texts(loaded, TEXTS, chunk=64, max_tokens=10_000)  # one block
    for a, b in zip(small, block):
        assert a.answer.label == b.answer.label
        for lab in LABELS:
            assert a.answer.scores[lab] == pytest.approx(b.answer.scores[lab], abs=1e-4)


# ---------------------------------------------------------------- the benchmark's own parts


def test_bench_load_generator_drives_a_live_server_and_reads_versions(
    tmp_path: Path, sqlite_url: str, tiny_model_dir: Path
) -> None:
    """The hand-written HTTP client of `flywheel bench serving`: every request answered, counted
    and timed, the model version read from each answer, errors (404) counted as errors."""
    from app.tools.bench.driving import drive, summarise

    settings = make_settings(tmp_path / "data", sqlite_url, tiny_model_dir)
    with serve_in_thread(settings) as base, httpx.Client(base_url=base, headers=ADMIN, timeout=60) as http:
        create_task(http)
        items = [["/v1/tasks/tickets/predict", '{"text": "%s"}' % t] for t in TEXTS]
        out = drive(base, items, concurrency=4, count=30, warmup=4, headers=ADMIN)
        bad = drive(base, [["/v1/tasks/nope/predict", '{"text": "x"}']], concurrency=2, count=4, headers=ADMIN)
    assert len(out["records"]) == 30
    assert {r[2] for r in out["records"]} == {200} and {r[3] for r in out["records"]} == {0}
    s = summarise(out["records"])
    assert s["errors"] == 0 and s["texts_per_s"] > 0 and s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"]
    assert summarise(bad["records"])["errors"] == 4
    assert out["cpu_s"] >= 0


def test_bench_targets_are_judged_from_the_measured_ratios() -> None:
    from app.tools.bench.targets import derive

    d = derive({
        "ceiling_texts_per_s": {"1": 50.0, "32": 100.0, "64": 120.0},
        "one_forward_ms": 20.0,
        "http": [{"concurrency": 1, "texts_per_s": 40.0, "p50_ms": 22.0},
                 {"concurrency": 32, "texts_per_s": 95.0, "p50_ms": 300.0},
                 {"concurrency": 64, "texts_per_s": 110.0, "p50_ms": 500.0}],
        "naive": {"32": {"texts_per_s": 40.0}, "64": {"texts_per_s": 40.0}},
        "feedback_postgres": {"requests_per_s": 2500.0, "p99_ms": 60.0},
        "feedback_bare_postgres": {"requests_per_s": 6000.0},
        "swap": {"failed_requests": 0, "swap_p99_ratio": 1.5},
        "int8_accuracy_delta_points": -0.5,
        "trainer": {"ratio": 0.97},
        "engines": {"torch-fp32": {"accuracy": 80.0}, "onnx-int8": {"accuracy": 79.2}},
        "served_engine": "onnx-int8",
    })
    assert d["ratio_to_ceiling_c32"] == pytest.approx(0.95)
    assert d["speedup_vs_naive_c64"] == pytest.approx(2.75)
    assert d["p50_c1_ratio_to_forward"] == pytest.approx(1.1) == d["p50_c1_ratio_to_best_forward"]
    assert d["feedback_ratio_to_bare_postgres"] == pytest.approx(2500 / 6000)
    assert d["served_engine_accuracy_delta_points"] == pytest.approx(-0.8)
    met = {name: t["met"] for name, t in d["targets"].items()}
    assert met == {"http_c32_vs_ceiling_bs32": True, "c64_vs_naive": False, "p50_c1_vs_one_forward": True,
                   "feedback_per_s_postgres": True, "feedback_p99_ms_postgres": False, "swap_failed_requests": True,
                   "swap_p99_ratio": True, "int8_accuracy_drop_points": True, "trainer_ratio_to_bare_loop": True,
                   "served_engine_accuracy_drop_points": False, "feedback_ratio_to_bare_postgres": False}
