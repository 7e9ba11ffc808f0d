"""POST /v1/tasks/{task}/predict: answers, the rows committed before the answer, and bad input.

This module runs with small limits (50 characters a text, 3 texts a call) so the limits are
cheap to reach."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from app.core.config import Settings
from app.db.tables import ModelVersion, Prediction
from support import make_settings
from support.api import LABELS, assert_problem, predict, rows, table_counts

MAX_CHARS = 50
MAX_TEXTS = 3


@pytest.fixture
def settings(tmp_path: Path, db_url: str, tiny_model_dir: Path) -> Settings:
    return make_settings(tmp_path / "data", db_url, tiny_model_dir, max_text_chars=MAX_CHARS,
                         max_texts_per_request=MAX_TEXTS)


def _check_prediction(p: dict) -> None:
    assert len(p["id"]) == 32
    assert set(p["scores"]) == set(LABELS)
    assert sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    assert all(0.0 <= s <= 1.0 for s in p["scores"].values())
    assert p["label"] == max(p["scores"], key=p["scores"].get)


def test_predict_one_text_is_committed_before_the_answer(client, task) -> None:
    before = datetime.now(timezone.utc)
    body = predict(client, text="I lost my credit card")
    after = datetime.now(timezone.utc)
    assert body["model_version"] == 0
    [p] = body["predictions"]
    _check_prediction(p)

    [row] = rows(client, Prediction, Prediction.id == p["id"])
    [active] = rows(client, ModelVersion, ModelVersion.status == "active")
    assert row.text == "I lost my credit card"
    assert row.label == p["label"]
    assert row.scores == p["scores"]
    assert row.model_version_id == active.id == task["active_version"]["id"]
    assert row.client_id is None  # the admin token is no client
    assert row.user_hash is None
    assert row.created_at.tzinfo is not None and before <= row.created_at <= after


def test_predict_as_a_client_stores_its_client_id(client, task) -> None:
    created = client.post("/v1/clients", json={"name": "app", "tasks": ["tickets"]}).json()
    body = predict(client, text="rain tomorrow", headers={"Authorization": f"Bearer {created['key']}"})
    [row] = rows(client, Prediction, Prediction.id == body["predictions"][0]["id"])
    assert row.client_id == created["id"]


def test_predict_a_batch_commits_every_row_in_order(client, task) -> None:
    texts = ["lost card", "the weather is cold today, what about tomorrow", "bill"]
    body = predict(client, texts=texts)
    preds = body["predictions"]
    assert len(preds) == len(texts) and len({p["id"] for p in preds}) == len(texts)
    for p in preds:
        _check_prediction(p)
    stored = {r.id: r for r in rows(client, Prediction)}
    assert len(stored) == len(texts)
    for text, p in zip(texts, preds):  # answers come back in the order the texts were sent
        assert stored[p["id"]].text == text
        assert stored[p["id"]].label == p["label"]
        assert stored[p["id"]].scores == p["scores"]
    assert client.get("/v1/tasks/tickets").json()["counts"]["predictions"] == len(texts)


def test_batched_answer_matches_single_answers(client, task) -> None:
    """Padding a short text next to a long one does not change its scores."""
    texts = ["card", "please help me find my lost wallet and credit card"]
    batch = predict(client, texts=texts)["predictions"]
    for text, b in zip(texts, batch):
        [single] = predict(client, text=text)["predictions"]
        assert single["label"] == b["label"]
        for lab in LABELS:
            assert single["scores"][lab] == pytest.approx(b["scores"][lab], abs=1e-4)


def test_every_prediction_says_whether_feedback_is_wanted(client, task) -> None:
    """`feedback_wanted` is always there and a boolean; it is not stored.  Under the default
    budget (5%) the first ask can come at the 20th prediction at the earliest."""
    preds = predict(client, texts=["lost card", "bill", "rain"])["predictions"]
    preds += predict(client, text="hello")["predictions"]
    assert all(p["feedback_wanted"] is False for p in preds)
    schema = client.get("/openapi.json").json()["components"]["schemas"]["PredictionOut"]
    assert schema["properties"]["feedback_wanted"]["type"] == "boolean"
    assert "feedback_wanted" in schema["required"]


def test_limits_are_inclusive(client, task) -> None:
    assert len(predict(client, texts=["a" * MAX_CHARS] * MAX_TEXTS)["predictions"]) == MAX_TEXTS


def test_user_id_is_stored_as_keyed_hash(client, task) -> None:
    body = predict(client, text="hello", user_id="alice@example.com")
    [row] = rows(client, Prediction, Prediction.id == body["predictions"][0]["id"])
    assert row.user_hash is not None and len(row.user_hash) == 64
    assert "alice" not in row.user_hash


# ---------------------------------------------------------------- bad input: 4xx, nothing stored


BAD_INPUTS = [
        ({"text": ""}, "empty-text", "text", ("empty",)),
        ({"text": "  \n\t "}, "empty-text", "text", ("empty",)),
        ({"texts": ["fine", "   "]}, "empty-text", "texts[1]", ("texts[1]", "empty")),
        ({"text": "a" * (MAX_CHARS + 1)}, "text-too-long", "text", (str(MAX_CHARS + 1), str(MAX_CHARS))),
        ({"texts": ["ok", "b" * (MAX_CHARS + 1)]}, "text-too-long", "texts[1]", (str(MAX_CHARS),)),
        ({"texts": ["a"] * (MAX_TEXTS + 1)}, "too-many-texts", "texts", (str(MAX_TEXTS + 1), str(MAX_TEXTS))),
        ({"texts": []}, "validation", "texts", ("at least 1",)),
        ({"text": "a", "texts": ["b"]}, "validation", "body", ("text", "texts")),
        ({}, "validation", "body", ("text", "texts")),
        ({"text": None}, "validation", "body", ("text",)),
        ({"text": 5}, "validation", "text", ("string",)),
        ({"texts": "not a list"}, "validation", "texts", ("list",)),
        ({"texts": ["ok", 7]}, "validation", "texts[1]", ()),
        ({"text": "ok", "user_id": ""}, "validation", "user_id", ()),
        ({"text": "ok", "label": "billing"}, "validation", "label", ()),
]


def test_bad_predict_input_is_422_naming_the_field_and_stores_nothing(client, task) -> None:
    before = table_counts(client)
    for body, slug, field, mentions in BAD_INPUTS:
        r = client.post("/v1/tasks/tickets/predict", json=body)
        assert_problem(r, 422, slug, field, mentions=mentions)
    assert table_counts(client) == before


def test_unknown_task_is_404(client, task) -> None:
    before = table_counts(client)
    r = client.post("/v1/tasks/nope/predict", json={"text": "hello"})
    assert_problem(r, 404, "unknown-task", "task", mentions=("nope",))
    assert table_counts(client) == before


def test_malformed_json_is_a_problem_document(client, task) -> None:
    before = table_counts(client)
    for raw in [b'{"text": "hello"', b"text=hello", b'{"text": "a",}', b"[1, 2"]:
        r = client.post("/v1/tasks/tickets/predict", content=raw, headers={"content-type": "application/json"})
        body = assert_problem(r, 422, "malformed-json", "body", mentions=("json",))
        assert isinstance(body["detail"], str)  # not FastAPI's {"detail": [...]}
    r = client.post("/v1/tasks/tickets/predict", content=b"", headers={"content-type": "application/json"})
    assert_problem(r, 422, "validation", "body")  # no body at all: nothing to parse, the body is missing
    assert table_counts(client) == before


@pytest.mark.parametrize(
    "raw",
    [b'{"text": "hello\\u0000world"}', b'{"texts": ["fine", "bad \\ud800 half a surrogate pair"]}'],
    ids=["nul-character", "lone-surrogate"],
)
def test_text_that_cannot_be_stored_or_encoded_is_422_on_every_database(client, task, raw: bytes) -> None:
    """A NUL can't be stored in a PostgreSQL text column (SQLite takes it) and a lone surrogate can't
    be tokenised; both are bad input, so a 422 naming the text, the same on every backend, not a 500."""
    before = table_counts(client)
    r = client.post("/v1/tasks/tickets/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] in ("text", "texts[1]")
    assert table_counts(client) == before
