"""The app over real HTTP: uvicorn on a loopback port (in a thread, tiny model), the
`flywheel serve` command as a subprocess, and integration tests on the real MiniLM model."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.db.tables import Prediction
from app.db.session import make_engine, make_sessionmaker
from app.process.launch import LocalService, flywheel_command, free_port
from support import ADMIN, ADMIN_TOKEN, make_settings
from support.live import serve_in_thread

LABELS = ["billing", "card_lost", "weather"]
STARTUP_S = 180  # an upper bound to give up waiting, not a performance claim


# ---------------------------------------------------------------- uvicorn in a thread, tiny model


def _stored_predictions(settings: Settings) -> dict[str, Prediction]:
    engine = make_engine(settings.db_url)
    try:
        with make_sessionmaker(engine)() as s:
            return {p.id: p for p in s.scalars(select(Prediction))}
    finally:
        engine.dispose()


def test_round_trip_over_real_http(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.post("/v1/tasks", json={"name": "tickets", "labels": LABELS}).status_code == 201
    assert http.get("/readyz").json() == {"status": "ready", "models": {"tickets": 0},
                                          "engines": {"tickets": "torch-fp32"}, "unloadable": {}}
    body = http.post("/v1/tasks/tickets/predict", json={"texts": ["lost card", "rain"]}).json()
    assert body["model_version"] == 0 and len(body["predictions"]) == 2
    pid = body["predictions"][0]["id"]
    r = http.post(f"/v1/predictions/{pid}/feedback", json={"signal": 1})
    assert r.status_code == 201
    counts = http.get("/v1/tasks/tickets").json()["counts"]
    assert counts["predictions"] == 2 and counts["feedback"]["positive"] == 1


def test_concurrent_predicts_are_all_answered_and_committed(http: httpx.Client, settings: Settings) -> None:
    assert http.post("/v1/tasks", json={"name": "tickets", "labels": LABELS}).status_code == 201
    sent = [[f"caller {c} text {i} lost card" + " rain" * (c % 4)] for c in range(12) for i in range(3)]

    def call(texts: list[str]) -> tuple[list[str], dict]:
        r = http.post("/v1/tasks/tickets/predict", json={"texts": texts})
        assert r.status_code == 200, r.text
        return texts, r.json()

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(call, sent))
    stored = _stored_predictions(settings)
    assert len(stored) == len(sent)
    for texts, body in answers:
        [p] = body["predictions"]
        assert stored[p["id"]].text == texts[0]
        assert stored[p["id"]].label == p["label"]
    assert http.get("/v1/tasks/tickets").json()["counts"]["predictions"] == len(sent)


def test_problem_documents_over_real_http(http: httpx.Client) -> None:
    r = http.post("/v1/tasks", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("malformed-json")
    r = httpx.get(http.base_url.join("/v1/tasks"))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_a_bad_text_does_not_fail_the_requests_batched_with_it(tmp_path: Path, db_url: str,
                                                               tiny_model_dir: Path) -> None:
    """Requests share a micro-batch and one insert.  A text that cannot be stored (NUL: PostgreSQL
    refuses it) or encoded (a lone surrogate) must be refused on its own, up front, with a 422,
    and must not turn its neighbours' answers into 500s."""
    settings = make_settings(tmp_path / "data", db_url, tiny_model_dir, max_wait_ms=250.0)
    with serve_in_thread(settings) as base, httpx.Client(base_url=base, headers=ADMIN, timeout=60) as http:
        assert http.post("/v1/tasks", json={"name": "tickets", "labels": LABELS}).status_code == 201
        good = [f"good text {i}".encode() for i in range(6)]
        bodies = [b'{"text": "' + g + b'"}' for g in good[:3]]
        bodies += [b'{"text": "nul \\u0000 here"}', b'{"text": "half \\ud800 pair"}']  # JSON escapes
        bodies += [b'{"text": "' + g + b'"}' for g in good[3:]]

        def call(raw: bytes) -> httpx.Response:
            return http.post("/v1/tasks/tickets/predict", content=raw, headers={"content-type": "application/json"})

        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(call, bodies))
    statuses = [r.status_code for r in answers]
    assert statuses == [200, 200, 200, 422, 422, 200, 200, 200], [r.text[:200] for r in answers]
    stored = _stored_predictions(settings)
    assert sorted(p.text for p in stored.values()) == sorted(g.decode() for g in good)


# ---------------------------------------------------------------- `flywheel serve` as a subprocess


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", COLUMNS="200")
    return env


@contextmanager
def serve(data_dir: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """`flywheel serve --no-worker` on a free loopback port (URL, process, log); SIGTERM on the way out."""
    with LocalService(data_dir, env={"COLUMNS": "200", **env}, startup_timeout_s=STARTUP_S) as service:
        yield service.url, service.api, service.logs["api"]


def test_serve_without_token_on_all_interfaces_refuses_to_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    r = subprocess.run(flywheel_command() + ["serve", "--host", "0.0.0.0", "--port", str(free_port()), "--no-worker"],
                       env=_env(data_dir), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    said = " ".join((r.stdout + r.stderr).split())
    assert "FLYWHEEL_ADMIN_TOKEN" in said and "0.0.0.0" in said, said
    assert "refusing" in said.lower()
    assert not (data_dir / "flywheel.db").exists()  # refused before touching anything


def test_serve_on_loopback_without_token_is_dev_mode(tmp_path: Path, tiny_model_dir: Path) -> None:
    with serve(tmp_path / "data", FLYWHEEL_BASE_MODEL=str(tiny_model_dir)) as (base, proc, log):
        r = httpx.post(f"{base}/v1/tasks", json={"name": "dev", "labels": ["a", "b"]}, timeout=60)
        assert r.status_code == 201, r.text  # no token: admin
        assert httpx.post(f"{base}/v1/tasks/dev/predict", json={"text": "hi"}, timeout=60).status_code == 200
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(30) in (0, -signal.SIGTERM)
    said = " ".join(log.read_text().split())
    assert "FLYWHEEL_ADMIN_TOKEN is not set" in said and "loopback" in said
    assert "flywheel: stopped" in said and "Application shutdown complete" in said
    assert (tmp_path / "data" / "flywheel.db").exists()


# ---------------------------------------------------------------- the real MiniLM model


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """`flywheel serve` with the default base model (all-MiniLM-L6-v2 from its wheel) and one task."""
    data_dir = tmp_path_factory.mktemp("minilm") / "data"
    with serve(data_dir, FLYWHEEL_ADMIN_TOKEN=ADMIN_TOKEN) as (base, _proc, _log):
        with httpx.Client(base_url=base, headers=ADMIN, timeout=120) as c:
            r = c.post("/v1/tasks", json={"name": "support", "labels": LABELS})
            assert r.status_code == 201, r.text
            yield c


ZERO_SHOT = {
    "I lost my credit card": "card_lost",
    "my card was stolen yesterday": "card_lost",
    "What is the weather like tomorrow?": "weather",
    "will it rain today": "weather",
    "I was charged twice on my invoice": "billing",
    "why is my bill so high": "billing",
}


@pytest.mark.integration
def test_minilm_zero_shot_predictions_are_sensible(minilm: httpx.Client) -> None:
    texts = list(ZERO_SHOT)
    body = minilm.post("/v1/tasks/support/predict", json={"texts": texts}).json()
    assert body["model_version"] == 0
    got = {t: p["label"] for t, p in zip(texts, body["predictions"])}
    assert got == ZERO_SHOT
    [single] = minilm.post("/v1/tasks/support/predict", json={"text": "I lost my credit card"}).json()["predictions"]
    assert single["label"] == "card_lost" and single["scores"]["card_lost"] > 0.5


@pytest.mark.integration
def test_minilm_batched_and_single_answers_agree(minilm: httpx.Client) -> None:
    texts = ["card", "Hello, I think somebody stole my wallet with all my cards and my id in it last night"]
    batch = minilm.post("/v1/tasks/support/predict", json={"texts": texts}).json()["predictions"]
    for text, b in zip(texts, batch):
        [s] = minilm.post("/v1/tasks/support/predict", json={"text": text}).json()["predictions"]
        assert s["label"] == b["label"]
        for lab in LABELS:
            assert s["scores"][lab] == pytest.approx(b["scores"][lab], abs=2e-3)


@pytest.mark.integration
def test_minilm_feedback_is_counted_on_the_task(minilm: httpx.Client) -> None:
    before = minilm.get("/v1/tasks/support").json()["counts"]
    key = minilm.post("/v1/clients", json={"name": "helpdesk", "tasks": ["support"]}).json()["key"]
    as_client = {"Authorization": f"Bearer {key}"}
    preds = minilm.post("/v1/tasks/support/predict", headers=as_client,
                        json={"texts": ["I lost my credit card", "it is sunny", "refund my fee"]}).json()["predictions"]
    right, wrong, corrected = (p["id"] for p in preds)
    fix = next(lab for lab in LABELS if lab != preds[2]["label"])
    fb = [(right, {"signal": 1}), (wrong, {"signal": -1}), (corrected, {"signal": -1, "correction": fix})]
    for pid, body in fb:
        r = minilm.post(f"/v1/predictions/{pid}/feedback", json=body, headers=as_client)
        assert r.status_code == 201, r.text
    after = minilm.get("/v1/tasks/support").json()["counts"]
    assert after["predictions"] == before["predictions"] + 3
    assert after["feedback"]["positive"] == before["feedback"]["positive"] + 1
    assert after["feedback"]["negative"] == before["feedback"]["negative"] + 2
    assert after["feedback"]["corrections"] == before["feedback"]["corrections"] + 1
    metrics = minilm.get("/metrics").text
    assert 'flywheel_feedback_total{signal="correction",task="support"} 1.0' in metrics


ANCHORS = {"-4": "terrible, awful, I hate it", "4": "wonderful, excellent, I love it"}


@pytest.mark.integration
def test_minilm_rating_from_anchors_orders_reviews_and_stays_in_range(minilm: httpx.Client) -> None:
    """Version 0 of a rating task places texts between its anchors: praise above complaint."""
    r = minilm.post("/v1/tasks", json={"name": "stars", "kind": "rating", "range": [-4, 4], "anchors": ANCHORS})
    assert r.status_code == 201, r.text
    texts = ["What a wonderful, moving film, I loved every minute", "a dull, terrible waste of my evening",
             "the train leaves at noon"]
    body = minilm.post("/v1/tasks/stars/predict", json={"texts": texts}).json()
    good, bad, flat = (p["score"] for p in body["predictions"])
    assert all(-4 <= s <= 4 for s in (good, bad, flat))
    assert good > flat > bad and good - bad > 2, (good, flat, bad)


@pytest.mark.integration
def test_minilm_tagging_offsets_are_characters_of_the_text_as_sent(minilm: httpx.Client) -> None:
    """The real WordPiece tokenizer lower-cases, splits and maps emoji to [UNK]; examples still
    import by character offsets and every span answered is a slice of the text as sent."""
    r = minilm.post("/v1/tasks", json={"name": "people", "kind": "tagging", "labels": ["person", "place"]})
    assert r.status_code == 201, r.text
    text = "Ünïcode 😀 Ada Lovelace visited Paris"
    spans = [{"start": 10, "end": 22, "label": "person"}, {"start": 31, "end": 36, "label": "place"}]
    assert [text[s["start"]:s["end"]] for s in spans] == ["Ada Lovelace", "Paris"]
    r = minilm.post("/v1/tasks/people/examples", json={"examples": [{"text": text, "spans": spans}]})
    assert r.status_code == 201, r.text
    [p] = minilm.post("/v1/tasks/people/predict", json={"text": text}).json()["predictions"]
    for sp in p["spans"]:
        assert text[sp["start"]:sp["end"]] == sp["text"]
    r = minilm.post(f"/v1/predictions/{p['id']}/feedback", json={"signal": -1, "correction": spans})
    assert r.status_code == 201, r.text
