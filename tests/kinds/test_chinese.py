"""Chinese text end to end on a Chinese-capable encoder loaded by path (a tiny random BERT whose
vocabulary holds the sample's characters, offline), and the growing vocabulary that lets an
encoder without those characters learn them: Chinese labels and descriptions, UTF-8 uploads,
character offsets of spans in mixed Chinese/ASCII/emoji text, predict → feedback → retrain →
promote, and rolling back from a version whose tokenizer grew to one whose did not."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from app.core.config import Settings
from app.kinds import TaskSpec, get_kind
from app.main import create_app
from app.model.encoder import encode_texts
from app.model.vocab import grow_vocabulary, unknown_chars
from app.process.worker import Worker
from support import ADMIN, make_settings
from support.api import assert_problem

SPORTS = list("比赛球队进球冠军足球篮球联赛教练球员胜利主场客场决赛")
FINANCE = list("股市大涨投资信心增强银行利率基金经济增长央行降息上涨下跌公司利润市场价格")
MIXED = "张伟在Apple上海办公室😀工作"  # Chinese, ASCII and an emoji (one code point, outside the BMP)
NEVER = {"min_new_signals": 1_000_000, "max_interval_s": None, "epochs": 3, "batch_size": 8, "learning_rate": 5e-3,
         "gate_min_rows": 5, "gate_confidence": 0.6}


def _synthetic(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label, pool = ("体育", SPORTS) if i % 2 == 0 else ("财经", FINANCE)
        out.append(("".join(rng.sample(pool, 6)) + f"{i}", label))
    return out


@pytest.fixture
def zh_settings(tmp_path: Path, db_url: str, tiny_chinese_model_dir: Path) -> Settings:
    return make_settings(tmp_path / "data", db_url, tiny_chinese_model_dir, engine="torch")


@pytest.fixture
def zh(zh_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(zh_settings), headers=ADMIN) as c:
        yield c


# ---------------------------------------------------------------- the tokenizer and offsets


def test_the_chinese_encoder_reads_every_sample_character_and_offsets_point_into_the_text(
        tiny_chinese_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_chinese_model_dir)
    [enc] = encode_texts(tok, [MIXED], 64, offsets=True)
    pieces = [MIXED[s:e] for s, e in enc.offsets if e > s]
    assert "".join(pieces) == MIXED.replace("😀", "") + "😀" or set(pieces) >= set("张伟在上海办公室工作")
    for (s, e), token_id in zip(enc.offsets, enc.ids):
        if e > s and MIXED[s:e] in "张伟在上海办公室工作":
            assert tok.convert_ids_to_tokens(token_id) == MIXED[s:e]  # one token a character, at its place
    assert unknown_chars(tok, [MIXED]) == ["😀"]


def test_chinese_spans_become_token_tags_on_the_right_characters(tiny_chinese_model_dir: Path) -> None:
    kind = get_kind("tagging")
    tok = AutoTokenizer.from_pretrained(tiny_chinese_model_dir)
    spec = TaskSpec(name="ner", kind="tagging", labels=["人名", "地名"], descriptions={})
    spans = [{"start": 0, "end": 2, "label": "人名"}, {"start": MIXED.index("上海"), "end": MIXED.index("上海") + 2,
                                                     "label": "地名"}]
    label = kind.canonical(spec, spans, text=MIXED, field="spans")
    [enc] = encode_texts(tok, [MIXED], 64, offsets=True)
    tags = kind.align(kind.target(spec, label), enc)
    tagged = {MIXED[s:e]: t for (s, e), t in zip(enc.offsets, tags) if e > s and t not in (0, -100)}
    assert set(tagged) == {"张", "伟", "上", "海"}
    assert tagged["张"] != tagged["伟"] and tagged["上"] != tagged["海"]  # B- then I-


# ---------------------------------------------------------------- the API in Chinese


def test_chinese_labels_descriptions_and_utf8_uploads(zh: TestClient) -> None:
    r = zh.post("/v1/tasks", json={"name": "news", "labels": ["体育", "财经"],
                                   "descriptions": {"体育": "比赛和球队", "财经": "股市和银行"}})
    assert r.status_code == 201, r.text
    task = zh.get("/v1/tasks/news").json()
    assert task["labels"] == ["体育", "财经"] and task["descriptions"]["财经"] == "股市和银行"
    rows = _synthetic(8)
    csv_body = "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows[:4])
    r = zh.post("/v1/tasks/news/examples", content=csv_body.encode("utf-8"),
                headers={"Content-Type": "text/csv; charset=utf-8"})
    assert r.status_code == 201 and r.json()["imported"] == 4, r.text
    r = zh.post("/v1/tasks/news/examples", json={"examples": [{"text": t, "label": lab} for t, lab in rows[4:]]})
    assert r.status_code == 201 and r.json()["imported"] == 4
    assert_problem(zh.post("/v1/tasks/news/examples", json={"examples": [{"text": "球赛", "label": "娱乐"}]}),
                   422, "unknown-label", "examples[0].label", mentions=("娱乐",))
    p = zh.post("/v1/tasks/news/predict", json={"text": "国足昨晚三比零战胜对手"}).json()["predictions"][0]
    assert p["label"] in ("体育", "财经") and set(p["scores"]) == {"体育", "财经"}
    other = "财经" if p["label"] == "体育" else "体育"
    r = zh.post(f"/v1/predictions/{p['id']}/feedback", json={"signal": -1, "correction": other})
    assert r.status_code == 201 and r.json()["correction"] == other


def test_chinese_tagging_with_mixed_text_and_emoji(zh: TestClient) -> None:
    assert zh.post("/v1/tasks", json={"name": "ner", "kind": "tagging", "labels": ["人名", "地名"]}).status_code == 201
    at = MIXED.index("上海")
    lines = [json.dumps({"text": MIXED, "spans": [{"start": 0, "end": 2, "label": "人名"},
                                                  {"start": at, "end": at + 2, "label": "地名"}]}, ensure_ascii=False)]
    r = zh.post("/v1/tasks/ner/examples", content=("\n".join(lines) + "\n").encode("utf-8"),
                headers={"Content-Type": "application/jsonl"})
    assert r.status_code == 201, r.text
    # Offsets count code points: "工作" ends at len(MIXED); counted in UTF-16 units (the emoji is two)
    # it would end one later, past the text.
    utf16_end = len(MIXED.encode("utf-16-le")) // 2
    r = zh.post("/v1/tasks/ner/examples", json={"examples": [
        {"text": MIXED, "spans": [{"start": utf16_end - 2, "end": utf16_end, "label": "人名"}]}]})
    assert_problem(r, 422, "span-out-of-range", "examples[0].spans[0].end", mentions=("0..16",))
    p = zh.post("/v1/tasks/ner/predict", json={"text": MIXED}).json()["predictions"][0]
    for span in p["spans"]:
        assert MIXED[span["start"]:span["end"]] == span["text"]
    right = [{"start": 0, "end": 2, "label": "人名"}, {"start": at, "end": at + 2, "label": "地名"}]
    r = zh.post(f"/v1/predictions/{p['id']}/feedback", json={"signal": -1, "correction": right})
    assert r.status_code == 201, r.text
    assert [(s["start"], s["end"], s["label"]) for s in r.json()["correction"]] == [(0, 2, "人名"), (at, at + 2, "地名")]


def test_predict_feedback_retrain_promote_in_chinese(zh: TestClient, zh_settings: Settings) -> None:
    assert zh.post("/v1/tasks", json={"name": "news", "labels": ["体育", "财经"], "policy": NEVER}).status_code == 201
    rows = _synthetic(60, seed=1)
    zh.post("/v1/tasks/news/examples", json={"examples": [{"text": t, "label": lab} for t, lab in rows]})
    preds = zh.post("/v1/tasks/news/predict", json={"texts": [t for t, _ in _synthetic(10, seed=2)]}).json()
    for p, (_, lab) in zip(preds["predictions"], _synthetic(10, seed=2)):
        zh.post(f"/v1/predictions/{p['id']}/feedback", json={"signal": 1 if p["label"] == lab else -1,
                                                            **({} if p["label"] == lab else {"correction": lab})})
    run_id = zh.post("/v1/tasks/news/retrain").json()["run_id"]
    worker = Worker(zh_settings, factory=zh.app.state.flywheel.sessions)
    assert worker.run_once() == "promoted", zh.get(f"/v1/runs/{run_id}").json()
    zh.app.state.flywheel.served.sync_once()
    test = _synthetic(20, seed=3)
    answers = zh.post("/v1/tasks/news/predict", json={"texts": [t for t, _ in test]}).json()
    assert answers["model_version"] == 1
    assert sum(p["label"] == lab for p, (_, lab) in zip(answers["predictions"], test)) >= 18


# ---------------------------------------------------------------- a vocabulary that grows


def test_a_grown_model_answers_as_before_until_it_is_trained(tiny_model_dir: Path) -> None:
    kind = get_kind("classification")
    spec = TaskSpec(name="t", kind="classification", labels=["good", "bad"], descriptions={})
    model, tok = kind.build_zero_shot(str(tiny_model_dir), spec)
    texts = ["这部电影太好看了，我非常喜欢", "服务态度很差，再也不来了"]
    new = unknown_chars(tok, texts)
    assert "这" in new and len(new) == len(set(new))
    enc = tok(texts, padding=True, return_tensors="pt")
    before = model(enc["input_ids"], enc["attention_mask"])
    assert grow_vocabulary(model, tok, new) == len(new)
    enc2 = tok(texts, padding=True, return_tensors="pt")
    assert (enc2["input_ids"] != tok.unk_token_id).sum() > (enc["input_ids"] != tok.unk_token_id).sum()
    assert torch.allclose(model(enc2["input_ids"], enc2["attention_mask"]), before, atol=1e-5)
    assert unknown_chars(tok, texts) == []


def test_a_grown_version_rolls_back_to_one_that_did_not_grow_without_a_failed_request(
        tmp_path: Path, db_url: str, tiny_model_dir: Path) -> None:
    """The English tiny model reads the Chinese texts as [UNK]; with grow_vocab the run's version
    learns their characters; activating version 0 again serves its own tokenizer, under load."""
    settings = make_settings(tmp_path / "data", db_url, tiny_model_dir, engine="torch")
    with TestClient(create_app(settings), headers=ADMIN) as c:
        c.post("/v1/tasks", json={"name": "news", "labels": ["体育", "财经"], "policy": {**NEVER, "grow_vocab": True}})
        c.post("/v1/tasks/news/examples", json={"examples": [{"text": t, "label": lab} for t, lab in _synthetic(60)]})
        c.post("/v1/tasks/news/retrain")
        assert Worker(settings, factory=c.app.state.flywheel.sessions).run_once() == "promoted"
        versions = {v["version"]: v for v in c.get("/v1/tasks/news/models").json()}
        assert 40 <= versions[1]["data_counts"]["vocab_added"] <= len(set(SPORTS + FINANCE))  # the training split's
        c.app.state.flywheel.served.sync_once()
        grown = c.app.state.flywheel.served.current("news").tokenizer
        assert grown.tokenize("股市") == ["股", "市"] or grown.convert_tokens_to_ids("股") != grown.unk_token_id
        statuses: list[int] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                statuses.append(c.post("/v1/tasks/news/predict", json={"text": "股市大涨，球队胜利"}).status_code)

        t = threading.Thread(target=load)
        t.start()
        try:
            assert c.post("/v1/tasks/news/models/0/activate").status_code == 200
            c.app.state.flywheel.served.sync_once()
            answer = c.post("/v1/tasks/news/predict", json={"text": "股市大涨"}).json()
        finally:
            stop.set()
            t.join(60)
        assert answer["model_version"] == 0
        old = c.app.state.flywheel.served.current("news").tokenizer
        assert old.tokenize("股") == [old.unk_token]  # version 0 kept its own tokenizer
        assert statuses and set(statuses) == {200}


def test_the_vocabulary_grows_only_when_the_task_asks(tmp_path: Path, sqlite_url: str, tiny_model_dir: Path) -> None:
    settings = make_settings(tmp_path / "data", sqlite_url, tiny_model_dir, engine="torch")
    with TestClient(create_app(settings), headers=ADMIN) as c:
        c.post("/v1/tasks", json={"name": "news", "labels": ["体育", "财经"], "policy": NEVER})  # the default: off
        c.post("/v1/tasks/news/examples", json={"examples": [{"text": t, "label": lab} for t, lab in _synthetic(40)]})
        c.post("/v1/tasks/news/retrain")
        Worker(settings, factory=c.app.state.flywheel.sessions).run_once()
        [run] = c.get("/v1/tasks/news/runs").json()
        assert run["data_counts"]["vocab_added"] == 0
