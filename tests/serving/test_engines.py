"""Inference engines: ONNX export and int8 quantisation of a stored version, parity against
PyTorch fp32, the choice among engines, serving on the chosen one, and falling back to PyTorch
when an engine file is missing or corrupt, without a failed request."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import torch
from sqlalchemy import update

from app.core.config import Settings
from app.db.session import transaction
from app.db.tables import ModelVersion
from app.kinds import get_kind
from app.kinds.base import Answer
from app.model.store import ENGINES_DIR, directory_sha256
from app.runs.prepare import PROBE_TEXTS, backfill_engines
from app.serving.onnx import _QuietThisThread
from app.serving.engines import ONNX_FILES, choose, file_sha256, parity, prepare_engines
from app.serving.registry import ServedModels
from support.learning import active, create_task

CPU = torch.device("cpu")
TEXTS = list(PROBE_TEXTS)


def _record(factory, task_id: int, record: dict) -> None:
    with transaction(factory) as s:
        s.execute(update(ModelVersion).where(ModelVersion.id == active(factory, task_id).id).values(engines=record))


# ---------------------------------------------------------------- parity and choice


def _cls(label: str, p: float) -> Answer:
    other = "b" if label == "a" else "a"
    scores = {label: p, other: 1 - p}
    return Answer(label, scores, {"label": label, "scores": scores})


def test_parity_forgives_flips_near_a_tie_but_not_on_sure_rows() -> None:
    kind = get_kind("classification")
    ref = [_cls("a", 0.95)] * 50 + [_cls("a", 0.52)] * 10
    near_tie_flips = [_cls("a", 0.94)] * 50 + [_cls("b", 0.51)] * 10
    p = parity(kind, ["a", "b"], ref, near_tie_flips)
    assert p.agreement == pytest.approx(50 / 60) and p.confident_agreement == 1.0 and p.ok
    sure_flips = [_cls("b", 0.6)] * 2 + [_cls("a", 0.95)] * 48 + [_cls("a", 0.52)] * 10
    assert not parity(kind, ["a", "b"], ref, sure_flips).ok  # 48/50 sure rows agree: under 0.98
    drift = [_cls("a", 0.90)] * 50 + [_cls("a", 0.52)] * 10
    assert not parity(kind, ["a", "b"], ref, drift).ok  # same answers, probabilities 0.042 off on average


RECORD = {"device": "cpu", "chosen": "onnx-int8", "candidates": {
    "torch-fp32": {"ok": True}, "torch-int8": {"ok": False}, "onnx-fp32": {"ok": True}, "onnx-int8": {"ok": True}}}


@pytest.mark.parametrize("record, setting, quantize, want", [
    (RECORD, "auto", False, "onnx-int8"),
    (RECORD, "onnx", False, "onnx-int8"),
    (RECORD, "torch", False, "torch-fp32"),
    (RECORD, "torch", True, "torch-int8"),
    ({}, "auto", False, "torch-fp32"),  # nothing prepared yet
    ({**RECORD, "device": "cuda"}, "auto", False, "torch-fp32"),  # prepared for another device
    ({**RECORD, "candidates": {**RECORD["candidates"], "onnx-int8": {"ok": False}}}, "onnx", False, "onnx-fp32"),
    ({**RECORD, "chosen": None}, "auto", True, "torch-int8"),  # nothing passed
])
def test_the_engine_is_chosen_from_the_record(record: dict, setting: str, quantize: bool, want: str) -> None:
    assert choose(record, setting, CPU, quantize)[0] == want


# ---------------------------------------------------------------- preparing engines


def test_prepare_exports_checks_and_times_every_cpu_engine(factory, settings: Settings) -> None:
    task_id = create_task(factory, settings)
    path = Path(active(factory, task_id).path)
    sha_before = directory_sha256(path)
    record = prepare_engines(path, texts=TEXTS, device=CPU, max_len=32)
    cands = record["candidates"]
    assert set(cands) == {"torch-fp32", "torch-int8", "onnx-fp32", "onnx-int8"}
    for name, file in ONNX_FILES.items():
        assert cands[name]["file"] == f"{ENGINES_DIR}/{file}"
        assert cands[name]["sha256"] == file_sha256(path / ENGINES_DIR / file)
    assert cands["onnx-fp32"]["ok"] and cands["onnx-fp32"]["parity"]["agreement"] == 1.0  # the same maths
    assert cands["onnx-fp32"]["parity"]["max_gap"] < 1e-4
    for c in cands.values():
        assert ("ms_per_text" in c) == c["ok"] and ("why" in c) == (not c["ok"])
    assert record["chosen"] == min((n for n, c in cands.items() if c["ok"]), key=lambda n: cands[n]["ms_per_text"])
    assert record["texts"] == len(TEXTS) and record["device"] == "cpu"
    assert directory_sha256(path) == sha_before  # the version's own hash does not cover its engines


@pytest.mark.parametrize("kind, fields", [
    ("rating", {"labels": ["-4", "0", "4"], "descriptions": {"-4": "terrible", "4": "wonderful"}}),
    ("tagging", {"labels": ["person", "place"]}),
])
def test_other_kinds_export_and_pass_parity_in_fp32(factory, settings: Settings, kind: str, fields: dict) -> None:
    task_id = create_task(factory, settings, name="other", kind=kind, **fields)
    record = prepare_engines(Path(active(factory, task_id).path), texts=TEXTS, device=CPU, max_len=32)
    assert record["candidates"]["onnx-fp32"]["ok"], record["candidates"]["onnx-fp32"]


# ---------------------------------------------------------------- serving on an engine


def _served(factory, engine: str = "auto") -> ServedModels:
    served = ServedModels(factory, device="cpu", max_len=32, engine=engine)
    served.sync_once()
    return served


def test_serving_uses_the_chosen_engine_and_answers_as_pytorch(factory, settings: Settings) -> None:
    task_id = create_task(factory, settings)
    record = prepare_engines(Path(active(factory, task_id).path), texts=TEXTS, device=CPU, max_len=32)
    _record(factory, task_id, {**record, "chosen": "onnx-fp32"})
    onnx, plain = _served(factory), _served(factory, "torch")
    assert onnx.current("intent").engine == "onnx-fp32" and plain.current("intent").engine == "torch-fp32"
    for a, b in zip(onnx.forward("intent", TEXTS), plain.forward("intent", TEXTS)):
        assert a.answer.label == b.answer.label
        assert max(abs(a.answer.scores[k] - b.answer.scores[k]) for k in a.answer.scores) < 1e-4


@pytest.mark.parametrize("engine", ["onnx-int8", "torch-int8", "onnx-fp32", "torch-fp32"])
def test_a_text_gets_the_same_answer_in_a_batch_as_alone_on_every_engine(factory, settings: Settings,
                                                                        engine: str) -> None:
    """Dynamic int8 quantisation takes its scale from the whole input tensor, so batched with
    others a text could get another answer than alone; the served answer must not depend on
    who else asked at the same moment."""
    task_id = create_task(factory, settings)
    record = prepare_engines(Path(active(factory, task_id).path), texts=TEXTS, device=CPU, max_len=32)
    _record(factory, task_id, {**record, "chosen": engine})
    served = _served(factory)
    assert served.current("intent").engine == engine
    texts = TEXTS + ["a much longer text about the weather and a lost card and a refund " * 3, "ok"]
    together = served.forward("intent", texts)
    for text, batched in zip(texts, together):
        [alone] = served.forward("intent", [text])
        assert batched.answer.label == alone.answer.label, text
        assert batched.answer.scores == pytest.approx(alone.answer.scores, abs=2e-6), text  # scores keep 6 places


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_bad_engine_file_falls_back_to_pytorch_without_a_failed_request(factory, settings: Settings,
                                                                          damage: str) -> None:
    task_id = create_task(factory, settings)
    path = Path(active(factory, task_id).path)
    record = prepare_engines(path, texts=TEXTS, device=CPU, max_len=32)
    _record(factory, task_id, {**record, "chosen": "onnx-fp32"})
    onnx_file = path / ENGINES_DIR / ONNX_FILES["onnx-fp32"]
    if damage == "corrupt":
        onnx_file.write_bytes(onnx_file.read_bytes()[:-64] + b"\0" * 64)
    else:
        onnx_file.unlink()
    served = _served(factory)
    loaded = served.current("intent")
    assert (loaded.wanted, loaded.engine) == ("onnx-fp32", "torch-fp32")
    assert len(served.forward("intent", TEXTS)) == len(TEXTS)
    assert served.sync_once() == 0  # no reload loop: it asked for the same engine again and got its fallback


def test_the_worker_prepares_engines_for_a_version_without_them_and_serving_moves_to_it(
        factory, settings: Settings) -> None:
    task_id = create_task(factory, settings)
    served = _served(factory)
    assert served.current("intent").engine == "torch-fp32"  # nothing prepared yet
    assert backfill_engines(factory, settings) == [active(factory, task_id).id]
    record = active(factory, task_id).engines
    assert record["chosen"] in {n for n, c in record["candidates"].items() if c["ok"]}
    assert backfill_engines(factory, settings) == []  # done once
    assert served.sync_once() == 1  # the watcher reloads the same version on its engine
    assert served.current("intent").engine == record["chosen"]


def test_the_api_shows_each_versions_engines(client) -> None:
    client.post("/v1/tasks", json={"name": "tickets", "labels": ["a", "b"]})
    [v0] = client.get("/v1/tasks/tickets/models").json()
    assert v0["engines"] == {}  # prepared by the worker, none runs in this test


def test_quantising_quiets_only_its_own_threads_advice_on_the_root_logger() -> None:
    """onnxruntime's quantiser warns on the root logger at every call; what silences it must not
    silence another thread's lines (a worker's 'claimed run' was lost that way)."""
    quiet = _QuietThisThread()
    mine = logging.LogRecord("root", logging.WARNING, __file__, 1, "pre-process first", None, None)
    error = logging.LogRecord("root", logging.ERROR, __file__, 1, "failed", None, None)
    theirs: list[logging.LogRecord] = []
    other = threading.Thread(target=lambda: theirs.append(
        logging.LogRecord("root", logging.INFO, __file__, 1, "claimed run 7", None, None)))
    other.start()
    other.join()
    assert not quiet.filter(mine)
    assert quiet.filter(error)
    assert quiet.filter(theirs[0])
