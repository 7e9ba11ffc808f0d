"""The validation gate: a worse candidate and a per-class recall drop are rejected, a better
candidate is promoted, feedback is scored by agreement, and no validation data means no promotion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.learning.dataset import Item
from app.kinds.classification import Classification, build_zero_shot
from app.learning.gate import decide, evaluate, predict_targets
from app.learning.trainer import TrainConfig, train
from app.policy import Policy

KIND = Classification()
from tests.learning_helpers import LABELS, synthetic

CPU = torch.device("cpu")
PAIRS = synthetic(80, seed=2)
TRAIN = [Item(t, LABELS.index(lab)) for t, lab in PAIRS[:50]]
VALIDATION = [Item(t, LABELS.index(lab)) for t, lab in PAIRS[50:]]


def _metrics(score: float, recall: dict[str, float]) -> dict:
    return {"n": 10, "score": score, "examples": {"n": 10, "accuracy": score, "macro_f1": score, "recall": recall}}


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path):  # noqa: ANN201
    model, tok = build_zero_shot(str(tiny_model_dir), LABELS)
    train(KIND, model, tok, TRAIN, VALIDATION, TrainConfig(policy=Policy(epochs=6, batch_size=8, learning_rate=3e-3, patience=6), max_len=32))
    return model, tok


def test_promotes_a_better_candidate(trained, tiny_model_dir: Path) -> None:  # noqa: ANN001
    active, active_tok = build_zero_shot(str(tiny_model_dir), LABELS)
    candidate, tok = trained
    rows = VALIDATION + [Item(t, LABELS.index(lab), +1, source="feedback") for t, lab in PAIRS[60:70]]
    c = evaluate(KIND, candidate, tok, rows, LABELS, device=CPU, max_len=32)
    a = evaluate(KIND, active, active_tok, rows, LABELS, device=CPU, max_len=32)
    assert c["score"] > a["score"]
    verdict = decide(c, a, tolerance=0.01, max_recall_drop=0.10)
    assert verdict.promote, verdict.reason
    record = verdict.to_json()
    assert record["verdict"] == "promote"
    assert set(record["candidate"]) >= {"score", "examples", "feedback"}
    assert set(record["candidate"]["examples"]["recall"]) == set(LABELS)


def test_rejects_a_candidate_worse_than_the_tolerance(trained, tiny_model_dir: Path) -> None:  # noqa: ANN001
    good, tok = trained
    worse, worse_tok = build_zero_shot(str(tiny_model_dir), LABELS)
    a = evaluate(KIND, good, tok, VALIDATION, LABELS, device=CPU, max_len=32)
    c = evaluate(KIND, worse, worse_tok, VALIDATION, LABELS, device=CPU, max_len=32)
    verdict = decide(c, a, tolerance=0.01, max_recall_drop=1.0)  # recall check off: the score alone decides
    assert not verdict.promote and "below the active" in verdict.reason


def test_tolerance_is_the_boundary() -> None:
    recall = {"bank": 0.8, "weather": 0.8}
    assert decide(_metrics(0.795, recall), _metrics(0.80, recall), tolerance=0.01).promote
    rejected = decide(_metrics(0.78, recall), _metrics(0.80, recall), tolerance=0.01)
    assert not rejected.promote and "below the active" in rejected.reason


def test_rejects_a_per_class_recall_drop_even_when_the_score_is_better() -> None:
    active = _metrics(0.80, {"bank": 0.9, "weather": 0.7})
    candidate = _metrics(0.85, {"bank": 0.75, "weather": 1.0})
    verdict = decide(candidate, active, tolerance=0.01, max_recall_drop=0.10)
    assert not verdict.promote and "'bank'" in verdict.reason and "below" not in verdict.reason
    assert decide(candidate, active, tolerance=0.01, max_recall_drop=0.20).promote


def test_feedback_is_scored_by_agreement(trained) -> None:  # noqa: ANN001
    model, tok = trained
    texts = [t for t, _ in PAIRS[50:60]]
    shown = predict_targets(KIND, model, tok, texts, device=CPU, max_len=32)
    agreeing = [Item(t, p, +1, source="feedback") for t, p in zip(texts, shown)]
    disagreeing = [Item(t, p, -1, source="feedback") for t, p in zip(texts, shown)]
    assert evaluate(KIND, model, tok, agreeing, LABELS, device=CPU, max_len=32)["feedback"]["agreement_positive"] == 1.0
    m = evaluate(KIND, model, tok, disagreeing, LABELS, device=CPU, max_len=32)
    assert m["feedback"]["disagreement_negative"] == 0.0 and m["score"] == 0.0
    corrections = [Item(t, p, 0, source="correction") for t, p in zip(texts, shown)]
    assert evaluate(KIND, model, tok, corrections, LABELS, device=CPU, max_len=32)["corrections"]["accuracy"] == 1.0


def test_no_validation_data_means_no_promotion(trained) -> None:  # noqa: ANN001
    model, tok = trained
    empty = evaluate(KIND, model, tok, [], LABELS, device=CPU, max_len=32)
    assert empty["score"] is None
    verdict = decide(empty, empty)
    assert not verdict.promote and "no validation data" in verdict.reason
