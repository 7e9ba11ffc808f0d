"""Explanations: POST /v1/tasks/{task}/explain attributes the served version's label to
character spans of the text (integrated gradients), and on a model that learnt which words
decide the label, those words carry the weight."""

from __future__ import annotations

import pytest

from app.worker import Worker
from learning_helpers import FAST_POLICY, LABELS, WORDS, add_examples, create_task, migrated, synthetic
from test_api_tasks import assert_problem, create_task as api_create_task


def test_an_explanation_names_spans_of_the_text_with_weights(client) -> None:
    api_create_task(client)
    text = "I lost my credit card, please help!"
    r = client.post("/v1/tasks/tickets/explain", json={"text": text})
    assert r.status_code == 200, r.text
    body = r.json()
    predicted = client.post("/v1/tasks/tickets/predict", json={"text": text}).json()["predictions"][0]
    assert body["label"] == predicted["label"] and body["score"] == pytest.approx(predicted["scores"][body["label"]],
                                                                                  abs=1e-4)
    assert body["attributions"] and "integrated gradients" in body["method"] and body["ms"] > 0
    for a in body["attributions"]:
        assert text[a["start"]:a["end"]] == a["text"] and -1.0 <= a["weight"] <= 1.0
    assert max(abs(a["weight"]) for a in body["attributions"]) == pytest.approx(1.0)


def test_only_classification_is_explained_and_bad_input_is_422(client) -> None:
    client.post("/v1/tasks", json={"name": "ner", "kind": "tagging", "labels": ["person"]})
    assert_problem(client.post("/v1/tasks/ner/explain", json={"text": "Ann met Bob"}), 422, "not-explainable", "task")
    api_create_task(client)
    assert_problem(client.post("/v1/tasks/tickets/explain", json={"text": ""}), 422, "validation", "text")
    assert_problem(client.post("/v1/tasks/nope/explain", json={"text": "hi"}), 404, "unknown-task", "task")


def test_a_key_explains_only_its_own_tasks(client) -> None:
    api_create_task(client)
    api_create_task(client, "other")
    key = client.post("/v1/clients", json={"name": "k", "tasks": ["tickets"]}).json()["key"]
    auth = {"Authorization": f"Bearer {key}"}
    assert client.post("/v1/tasks/tickets/explain", json={"text": "hi"}, headers=auth).status_code == 200
    assert_problem(client.post("/v1/tasks/other/explain", json={"text": "hi"}, headers=auth), 404, "unknown-task",
                   "task")


def test_a_stored_prediction_is_explained_by_its_id_for_its_owner_only(client) -> None:
    api_create_task(client)
    key = client.post("/v1/clients", json={"name": "k", "tasks": ["tickets"]}).json()["key"]
    auth = {"Authorization": f"Bearer {key}"}
    mine = client.post("/v1/tasks/tickets/predict", json={"text": "my card is gone"}, headers=auth).json()
    theirs = client.post("/v1/tasks/tickets/predict", json={"text": "what is the weather"}).json()
    r = client.post(f"/v1/predictions/{mine['predictions'][0]['id']}/explain", headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "my card is gone" and body["prediction_version"] == 0 == body["model_version"]
    assert body["label"] == mine["predictions"][0]["label"]
    assert body["attributions"] and all(body["text"][a["start"]:a["end"]] == a["text"] for a in body["attributions"])
    assert_problem(client.post(f"/v1/predictions/{theirs['predictions'][0]['id']}/explain", headers=auth), 404,
                   "unknown-prediction", "prediction_id")
    assert client.post(f"/v1/predictions/{theirs['predictions'][0]['id']}/explain").status_code == 200  # the admin
    assert_problem(client.post("/v1/predictions/nope/explain"), 404, "unknown-prediction", "prediction_id")


def test_on_a_trained_model_the_deciding_words_carry_the_weight(client, settings, db_url) -> None:
    """The model learnt that class words decide the label (filler words say nothing): the most
    heavily weighted span is a class word of the predicted label in nearly every text."""
    factory = migrated(db_url)
    task_id = create_task(factory, settings, policy=dict(FAST_POLICY, min_new_signals=1_000_000, max_interval_s=None))
    add_examples(factory, task_id, synthetic(60, seed=4))
    client.post("/v1/tasks/intent/retrain")
    assert Worker(settings, factory=factory).run_once() == "promoted"
    client.app.state.flywheel.served.sync_once()
    hits = 0
    tests = synthetic(12, seed=9)
    for text, label in tests:
        body = client.post("/v1/tasks/intent/explain", json={"text": text}).json()
        top = max(body["attributions"], key=lambda a: a["weight"])
        hits += body["label"] == label and top["text"] in WORDS[label]
    assert hits >= 10, hits
    assert set(LABELS) == set(WORDS)
