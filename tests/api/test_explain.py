"""Explanations: POST /v1/tasks/{task}/explain attributes the served version's label to
character spans of the text (integrated gradients), and on a model that learnt which words
decide the label, those words carry the weight."""

from __future__ import annotations

import pytest

from app.process.worker import Worker
from support.learning import FAST_POLICY, LABELS, WORDS, add_examples, create_task, migrated, synthetic
from support.api import assert_problem, create_task as api_create_task


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


# ---------------------------------------------------------------- explanations beside serving


SIX_WORDS = ["my card was lost last night", "please send me the weather now", "why was I charged twice today",
             "the rain will not stop here", "someone took my wallet and card", "a refund for the double payment"]


def test_explanations_running_beside_predictions_never_change_an_answer(tmp_path, db_url, tiny_model_dir) -> None:
    """Integrated gradients hooks the model it runs on.  Explanations and predictions of one task
    run at once (three threads explaining, four predicting, on the PyTorch engine that serves
    version 0): every prediction is the answer its text gets alone, and nothing fails."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from app.main import create_app
    from support import ADMIN, make_settings

    settings = make_settings(tmp_path / "data", db_url, tiny_model_dir, engine="torch", explain_workers=2,
                             explain_queue=16)
    with TestClient(create_app(settings), headers=ADMIN) as client:
        api_create_task(client)
        alone = {t: client.post("/v1/tasks/tickets/predict", json={"text": t}).json()["predictions"][0]
                 for t in SIX_WORDS}
        assert client.app.state.flywheel.served.current("tickets").engine == "torch-fp32"

        def explain_loop(k: int) -> list[int]:
            return [client.post("/v1/tasks/tickets/explain", json={"text": SIX_WORDS[(k + i) % 6]}).status_code
                    for i in range(8)]

        def predict_loop(k: int) -> list[tuple[str, int, dict]]:
            out = []
            for i in range(12):
                text = SIX_WORDS[(k + i) % 6]
                r = client.post("/v1/tasks/tickets/predict", json={"text": text})
                out.append((text, r.status_code, r.json()["predictions"][0] if r.status_code == 200 else r.json()))
            return out

        with ThreadPoolExecutor(7) as pool:
            explaining = [pool.submit(explain_loop, k) for k in range(3)]
            predicting = [pool.submit(predict_loop, k) for k in range(4)]
            explained = [code for f in explaining for code in f.result()]
            answers = [a for f in predicting for a in f.result()]
    assert explained == [200] * 24
    assert [code for _, code, _ in answers] == [200] * 48
    for text, _, answer in answers:
        assert answer["label"] == alone[text]["label"], text
        assert answer["scores"] == pytest.approx(alone[text]["scores"], abs=1e-5), text


class _Copies:
    """load_copy for an Explainer: counts the copies made and can hold them back until released."""

    def __init__(self, served) -> None:
        import threading

        self.served, self.made, self.release = served, 0, threading.Event()
        self.release.set()

    def __call__(self, loaded):
        self.release.wait(30)
        self.made += 1
        return self.served.fp32_copy(loaded)


async def _explain_many(explainer, tasks_and_texts) -> list:
    import asyncio

    return await asyncio.gather(*(explainer.explain(task, text) for task, text in tasks_and_texts),
                                return_exceptions=True)


def test_a_version_is_copied_once_however_many_explain_at_once_and_copies_are_bounded(client) -> None:
    import asyncio

    from app.serving.explain import Explainer

    api_create_task(client)
    client.post("/v1/tasks", json={"name": "moods", "kind": "classification", "labels": ["happy", "sad"]})
    served = client.app.state.flywheel.served
    served.sync_once()
    copies = _Copies(served)
    explainer = Explainer(current=served.current, load_copy=copies, workers=3, max_waiting=8, max_models=1)
    try:
        results = asyncio.run(_explain_many(explainer, [("tickets", t) for t in SIX_WORDS]))
        assert all(not isinstance(r, Exception) for r in results), results
        assert copies.made == 1  # six at once, on three threads: one copy of the version
        assert all(model is served.current("tickets") for model, _ in results)  # the served model answers
        asyncio.run(_explain_many(explainer, [("moods", "what a lovely day")]))
        assert copies.made == 2 and explainer.copies() == {"moods": served.current("moods").version_id}
    finally:
        explainer.close()


def test_explanations_past_the_pool_and_its_queue_are_refused_not_queued(client) -> None:
    import asyncio

    from app.serving.explain import Explainer, ExplainerBusy

    api_create_task(client)
    served = client.app.state.flywheel.served
    served.sync_once()
    copies = _Copies(served)
    copies.release.clear()  # the first explanation holds the only thread
    explainer = Explainer(current=served.current, load_copy=copies, workers=1, max_waiting=1, max_models=2)

    async def three_at_once() -> list:
        first = asyncio.ensure_future(explainer.explain("tickets", SIX_WORDS[0]))
        second = asyncio.ensure_future(explainer.explain("tickets", SIX_WORDS[1]))
        await asyncio.sleep(0.05)
        with pytest.raises(ExplainerBusy):
            await explainer.explain("tickets", SIX_WORDS[2])
        copies.release.set()
        return await asyncio.gather(first, second)

    try:
        done = asyncio.run(three_at_once())
        assert len(done) == 2 and copies.made == 1
    finally:
        explainer.close()


def test_a_client_key_has_an_explanation_budget_of_its_own(tmp_path, db_url, tiny_model_dir) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from support import ADMIN, make_settings

    settings = make_settings(tmp_path / "data", db_url, tiny_model_dir, explain_burst=2, explain_rate_per_s=0.001)
    with TestClient(create_app(settings), headers=ADMIN) as client:
        api_create_task(client)
        key = client.post("/v1/clients", json={"name": "app", "tasks": ["tickets"]}).json()["key"]
        auth = {"Authorization": f"Bearer {key}"}
        for _ in range(2):
            assert client.post("/v1/tasks/tickets/explain", json={"text": "hi"}, headers=auth).status_code == 200
        r = client.post("/v1/tasks/tickets/explain", json={"text": "hi"}, headers=auth)
        assert_problem(r, 429, "rate-limited", "Authorization")
        assert "explanations/s" in r.json()["detail"] and int(r.headers["Retry-After"]) >= 1
        # predictions still flow: the budget is the explanations' own
        assert client.post("/v1/tasks/tickets/predict", json={"text": "hi"}, headers=auth).status_code == 200
        assert client.post("/v1/tasks/tickets/explain", json={"text": "hi"}).status_code == 200  # the admin
