"""The `tagging` kind end to end on the tiny model, SQLite and PostgreSQL: spans as character
offsets into the text as sent (sub-words, emoji and characters the vocabulary lacks included),
examples as JSON and JSON lines with every bad span refused by name, feedback on the whole
answer or on one span, a retrain that learns the entities, promotion and rollback; plus the
losses and the entity metrics."""

from __future__ import annotations

import json
import random

import httpx
import pytest
import torch

from app.core.config import Settings
from app.kinds.tagging import IGNORE, TagTarget, align, entity_metrics, feedback_losses, spans_of
from app.model.encoder import encode_texts
from app.process.worker import Worker
from support.learning import FAST_POLICY, FILLER
from support.api import problem
from support.waiting import wait_until

POLICY = {**FAST_POLICY, "epochs": 10, "patience": 10, "gate_tolerance": 1.0, "max_recall_drop": 1.0}
PLACES = "london paris berlin tokyo madrid".split()


def tagged(n: int, seed: int) -> list[dict]:
    """Texts of filler words with one place name in each, and its span."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.sample(FILLER, 3)
        at = rng.randrange(4)
        words.insert(at, rng.choice(PLACES))
        text = " ".join(words)
        start = len(" ".join(words[:at])) + (1 if at else 0)
        out.append({"text": text, "spans": [{"start": start, "end": start + len(words[at]), "label": "place"}]})
    return out


def create(http: httpx.Client, name: str = "ner") -> httpx.Response:
    return http.post("/v1/tasks", json={"name": name, "kind": "tagging", "labels": ["place"], "policy": POLICY})


def predict(http: httpx.Client, texts: list[str], task: str = "ner") -> tuple[int, list[dict]]:
    r = http.post(f"/v1/tasks/{task}/predict", json={"texts": texts})
    assert r.status_code == 200, r.text
    return r.json()["model_version"], r.json()["predictions"]


def f1(predictions: list[dict], gold: list[dict]) -> float:
    to = lambda spans: [(s["start"], s["end"], 0) for s in spans]  # noqa: E731
    return entity_metrics([to(g["spans"]) for g in gold], [to(p["spans"]) for p in predictions])["f1"]


def test_tagging_loop_examples_feedback_retrain_promote_rollback(http: httpx.Client, settings: Settings) -> None:
    r = create(http)
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "tagging" and r.json()["labels"] == ["place"]
    data = tagged(60, seed=1)
    examples, traffic = data[:40], data[40:]
    assert http.post("/v1/tasks/ner/examples", json={"examples": examples[:20]}).status_code == 201
    lines = "\n".join(json.dumps(e) for e in examples[20:]) + "\n"
    r = http.post("/v1/tasks/ner/examples", content=lines, headers={"Content-Type": "application/jsonl"})
    assert r.status_code == 201 and r.json()["imported"] == 20, r.text

    version0, before = predict(http, [t["text"] for t in traffic])
    assert version0 == 0
    for p, t in zip(before, traffic):
        assert set(p) == {"id", "spans", "feedback_wanted"}
        for sp in p["spans"]:
            assert t["text"][sp["start"]:sp["end"]] == sp["text"] and sp["label"] == "place"
    for i, (p, t) in enumerate(zip(before, traffic)):
        if p["spans"] == [] or i % 3 == 0:  # the whole answer, corrected
            body = {"signal": -1, "correction": t["spans"]} if p["spans"] != t["spans"] else {"signal": 1}
        else:  # one span at a time
            gold = {(s["start"], s["end"]) for s in t["spans"]}
            body = {"signal": 1 if (p["spans"][0]["start"], p["spans"][0]["end"]) in gold else -1, "span": 0}
        r = http.post(f"/v1/predictions/{p['id']}/feedback", json=body)
        assert r.status_code == 201 and r.json()["correction"] == body.get("correction"), r.text
        assert r.json()["span"] == body.get("span")

    run_id = http.post("/v1/tasks/ner/retrain").json()["run_id"]
    assert Worker(settings).run_once() == "promoted"
    run = http.get(f"/v1/runs/{run_id}").json()
    assert {"precision", "recall", "f1"} <= set(run["gate"]["candidate"]["examples"])
    assert run["data_counts"]["examples"] == 40

    wait_until(lambda: predict(http, [traffic[0]["text"]])[0] == 1, 60, "the API to serve version 1")
    _, after = predict(http, [t["text"] for t in traffic])
    assert f1(after, traffic) > max(0.6, f1(before, traffic) + 0.3), (f1(before, traffic), f1(after, traffic))

    assert http.post("/v1/tasks/ner/models/0/activate").status_code == 200
    wait_until(lambda: predict(http, [traffic[0]["text"]])[0] == 0, 60, "the API to serve version 0 again")
    assert [p["spans"] for p in predict(http, [t["text"] for t in traffic])[1]] == [p["spans"] for p in before]


def test_a_text_without_entities_answers_no_spans_and_offsets_survive_odd_characters(client) -> None:
    assert client.post("/v1/tasks", json={"name": "ner", "kind": "tagging", "labels": ["place"]}).status_code == 201
    for text in ["the of and", "😀 london 😀 tokyo", "x" * 3 + " ünïcödé paris"]:
        p = client.post("/v1/tasks/ner/predict", json={"text": text}).json()["predictions"][0]
        assert isinstance(p["spans"], list)
        for sp in p["spans"]:
            assert 0 <= sp["start"] < sp["end"] <= len(text) and text[sp["start"]:sp["end"]] == sp["text"]
    review = client.get("/v1/tasks/ner/review")
    assert review.status_code == 200 and len(review.json()["items"]) == 3
    assert all(0 <= item["value"] <= 2 for item in review.json()["items"])


@pytest.mark.parametrize("spans, field", [
    ([{"start": 0, "end": 99, "label": "place"}], "examples[0].spans[0].end"),
    ([{"start": 0, "end": 3, "label": "planet"}], "examples[0].spans[0].label"),
    ([{"start": 0, "end": 6, "label": "place"}, {"start": 4, "end": 8, "label": "place"}], "examples[0].spans"),
    ([{"start": 3, "end": 3, "label": "place"}], "examples[0].spans[0].end"),
])
def test_bad_spans_are_422_naming_row_and_field_and_nothing_is_imported(client, spans, field) -> None:
    assert create(client).status_code == 201
    good = tagged(2, seed=3)
    r = client.post("/v1/tasks/ner/examples", json={"examples": [{"text": "london is big", "spans": spans}, *good]})
    problem(r, 422, None, field)
    lines = json.dumps(good[0]) + "\n" + json.dumps({"text": "london is big", "spans": spans}) + "\n"
    r = client.post("/v1/tasks/ner/examples", content=lines, headers={"Content-Type": "application/x-ndjson"})
    problem(r, 422, None, field.replace("examples[0]", "line 2"))
    assert client.get("/v1/tasks/ner").json()["counts"]["examples"]["total"] == 0


def test_span_feedback_is_checked_against_the_answer_and_the_kind(client) -> None:
    assert create(client).status_code == 201
    pid = client.post("/v1/tasks/ner/predict", json={"text": "the of and"}).json()["predictions"][0]["id"]
    n = len(client.post("/v1/tasks/ner/predict", json={"text": "the of and"}).json()["predictions"][0]["spans"])
    problem(client.post(f"/v1/predictions/{pid}/feedback", json={"signal": 1, "span": n}), 422, "unknown-span", "span")
    bad = [{"start": 0, "end": 50, "label": "place"}]
    problem(client.post(f"/v1/predictions/{pid}/feedback", json={"signal": -1, "correction": bad}), 422, None,
            "correction[0].end")
    assert client.post("/v1/tasks", json={"name": "c", "labels": ["a", "b"]}).status_code == 201
    cid = client.post("/v1/tasks/c/predict", json={"text": "hello"}).json()["predictions"][0]["id"]
    problem(client.post(f"/v1/predictions/{cid}/feedback", json={"signal": 1, "span": 0}), 422,
            "field-not-for-kind", "span")
    assert client.get("/v1/tasks/ner").json()["counts"]["feedback"]["total"] == 0


# ---------------------------------------------------------------- units


def test_spans_align_to_sub_word_tokens_and_back(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "😀 in londonzz with tokyo"
    start = text.index("londonzz")
    spans = ((start, start + 8, 0), (text.index("tokyo"), text.index("tokyo") + 5, 0))
    enc = encode_texts(tok, [text], 32, offsets=True)[0]
    tags = align(TagTarget(spans), enc.offsets)
    assert IGNORE in tags[:1] and tags.count(1) == 2  # [CLS] ignored; one B per entity, I for its other pieces
    assert [(s, e, j) for s, e, j, _ in spans_of(tags, enc.offsets)] == list(spans)
    only_second = align(TagTarget(spans, scope=1), enc.offsets)
    assert [t for t in only_second if t != IGNORE] == [1] * 1 + [2] * (sum(t != IGNORE for t in only_second) - 1)


def test_tagging_losses_bounded_and_signed() -> None:
    logits = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]]])
    shown = torch.tensor([[0, 1]])
    minus, plus = torch.tensor([-1]), torch.tensor([1])
    assert feedback_losses(logits, shown, plus).item() < 0.1
    assert feedback_losses(logits, shown, minus).item() > 2  # a confident answer called wrong costs much
    assert feedback_losses(logits * 10, shown, minus, "bounded").item() < 100  # finite as p -> 1
    assert feedback_losses(-logits * 10, shown, minus, "bounded").item() == pytest.approx(0.0, abs=1e-3)
    assert feedback_losses(-logits * 10, shown, minus, "signed").item() < -10  # unbounded below
    empty = torch.tensor([[IGNORE, IGNORE]])
    assert feedback_losses(logits, empty, minus).item() == 0.0


def test_entity_metrics() -> None:
    m = entity_metrics([[(0, 5, 0)], [(1, 3, 1)], []], [[(0, 5, 0)], [(1, 4, 1)], [(2, 3, 0)]])
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(0.4) and m["exact_rows"] == pytest.approx(1 / 3)
