"""The validation gate: a paired test on the same rows that says promote, reject or keep
collecting; feedback outcomes scored honestly (a changed −1'd answer is unknown, never right);
a per-class recall drop vetoes; no validation data (or too little) promotes nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from app.kinds.classification import Classification, build_zero_shot
from app.learning.dataset import Item
from app.learning.gate import Evaluation, calibration, compare, evaluate, judge, look_confidence, predict_targets
from app.learning.trainer import TrainConfig, train
from app.core.policy import Policy
from support.learning import LABELS, synthetic

KIND = Classification()
CPU = torch.device("cpu")
PAIRS = synthetic(80, seed=2)
TRAIN = [Item(t, LABELS.index(lab)) for t, lab in PAIRS[:50]]
VALIDATION = [Item(t, LABELS.index(lab)) for t, lab in PAIRS[50:]]


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path):
    model, tok = build_zero_shot(str(tiny_model_dir), LABELS)
    config = TrainConfig(policy=Policy(epochs=6, batch_size=8, learning_rate=3e-3, patience=6), max_len=32,
                         device="cpu")
    train(KIND, model, tok, TRAIN, VALIDATION, config)
    return model, tok


def _evaluation(items: list[Item], predicted: list[int], confidence: list[float] | None = None) -> Evaluation:
    return Evaluation(predicted, KIND.gate_metrics(items, predicted, LABELS), confidence)


def _labelled(n: int) -> list[Item]:
    return [Item(f"text {i}", i % 2) for i in range(n)]


def _answers(items: list[Item], wrong: set[int]) -> list[int]:
    """Right on every row except those in `wrong`."""
    return [1 - it.label if i in wrong else it.label for i, it in enumerate(items)]


def test_promotes_a_better_candidate(trained, tiny_model_dir: Path) -> None:
    active, active_tok = build_zero_shot(str(tiny_model_dir), LABELS)
    candidate, tok = trained
    rows = VALIDATION + [Item(t, LABELS.index(lab), +1, source="feedback") for t, lab in PAIRS[60:70]]
    c = evaluate(KIND, candidate, tok, rows, LABELS, device=CPU, max_len=32)
    a = evaluate(KIND, active, active_tok, rows, LABELS, device=CPU, max_len=32)
    assert c.metrics["score"] > a.metrics["score"]
    verdict = judge(KIND, rows, c, a, tolerance=0.01, max_recall_drop=0.10, min_rows=10)
    assert verdict.promote, verdict.reason
    record = verdict.to_json()
    assert record["verdict"] == "promote" and record["comparison"]["lower_bound"] >= -0.01
    assert record["comparison"]["rows"] == len(rows) and record["comparison"]["confidence"] == 0.95
    assert set(record["candidate"]) >= {"score", "examples", "feedback"}
    assert set(record["candidate"]["examples"]["recall"]) == set(LABELS)


def test_rejects_a_worse_candidate(trained, tiny_model_dir: Path) -> None:
    good, tok = trained
    worse, worse_tok = build_zero_shot(str(tiny_model_dir), LABELS)
    a = evaluate(KIND, good, tok, VALIDATION, LABELS, device=CPU, max_len=32)
    c = evaluate(KIND, worse, worse_tok, VALIDATION, LABELS, device=CPU, max_len=32)
    verdict = judge(KIND, VALIDATION, c, a, tolerance=0.01, max_recall_drop=1.0, min_rows=10)
    assert verdict.decision == "reject" and "worse than the active" in verdict.reason


def test_the_same_answers_promote_and_clearly_worse_ones_reject() -> None:
    items = _labelled(200)
    active = _evaluation(items, _answers(items, wrong=set(range(40))))
    same = _evaluation(items, _answers(items, wrong=set(range(40))))
    assert judge(KIND, items, same, active).promote
    worse = _evaluation(items, _answers(items, wrong=set(range(80))))
    assert judge(KIND, items, worse, active).decision == "reject"


def test_a_small_difference_on_few_rows_is_inconclusive_not_a_verdict() -> None:
    items = _labelled(40)
    active = _evaluation(items, _answers(items, wrong={0, 1, 2, 3}))
    candidate = _evaluation(items, _answers(items, wrong={2, 3, 4, 5, 6}))  # one worse, by chance or not
    verdict = judge(KIND, items, candidate, active, tolerance=0.01)
    assert verdict.decision == "inconclusive" and "keep collecting" in verdict.reason


def test_too_few_rows_with_a_known_outcome_is_inconclusive() -> None:
    items = _labelled(12)
    right = _evaluation(items, _answers(items, wrong=set()))
    verdict = judge(KIND, items, right, right, min_rows=30)
    assert verdict.decision == "inconclusive" and "too few" in verdict.reason


def test_changing_a_refuted_answer_is_unknown_not_right() -> None:
    """A −1 says the shown label was wrong; a candidate that merely answers something else has not
    shown it is right.  The old gate counted that as agreement; this one knows it does not know."""
    items = [Item(f"text {i}", 0, -1, source="feedback") for i in range(100)]  # label 0 was refuted each time
    active = _evaluation(items, [0] * 100)  # keeps the refuted label: known wrong
    candidate = _evaluation(items, [1] * 100)  # changes it: unknown
    cmp = compare(KIND, items, candidate, active, confidence=0.95)
    assert cmp.known == 0 and cmp.mean_lo == 0.0 and cmp.mean_hi == 1.0
    assert judge(KIND, items, candidate, active).decision == "inconclusive"
    assert candidate.metrics["feedback"]["unknown_negative"] == 100 and candidate.metrics["score"] is None
    assert active.metrics["feedback"]["kept_negative"] == 1.0 and active.metrics["score"] == 0.0


def test_a_plus_one_answer_changed_is_known_wrong() -> None:
    items = [Item(f"text {i}", 0, +1, source="feedback") for i in range(100)]
    keeps, changes = _evaluation(items, [0] * 100), _evaluation(items, [1] * 100)
    assert keeps.metrics["score"] == 1.0 and changes.metrics["score"] == 0.0
    assert judge(KIND, items, changes, keeps).decision == "reject"


def test_row_weights_count_in_the_comparison() -> None:
    """A capped client's rows weigh less here too: its rows alone cannot sink a candidate."""
    heavy = [Item(f"a {i}", 0, weight=1.0) for i in range(100)]
    light = [Item(f"b {i}", 0, weight=0.01, client_id=7) for i in range(100)]
    items = heavy + light
    active = _evaluation(items, [0] * 200)
    candidate = _evaluation(items, [0] * 100 + [1] * 100)  # wrong only on the light client's rows
    cmp = compare(KIND, items, candidate, active, confidence=0.95)
    assert cmp.mean_lo == pytest.approx(-0.01 / 1.01)


def test_rejects_a_per_class_recall_drop_on_classes_with_enough_examples() -> None:
    items = _labelled(200)
    active = _evaluation(items, _answers(items, wrong=set()))
    # 30 of label 0's 100 rows wrong, and 30 extra rows of label 1 right: recall of label 0 drops 0.3.
    candidate = _evaluation(items, _answers(items, wrong={i for i in range(0, 60, 2)}))
    verdict = judge(KIND, items, candidate, active, tolerance=1.0, max_recall_drop=0.10)
    assert verdict.decision == "reject" and "'bank'" in verdict.reason
    assert judge(KIND, items, candidate, active, tolerance=1.0, max_recall_drop=0.5).promote


def test_feedback_is_scored_by_known_outcomes(trained) -> None:
    model, tok = trained
    texts = [t for t, _ in PAIRS[50:60]]
    shown = predict_targets(KIND, model, tok, texts, device=CPU, max_len=32)
    agreeing = [Item(t, p, +1, source="feedback") for t, p in zip(texts, shown)]
    refuted = [Item(t, p, -1, source="feedback") for t, p in zip(texts, shown)]
    assert evaluate(KIND, model, tok, agreeing, LABELS, device=CPU, max_len=32).metrics["score"] == 1.0
    m = evaluate(KIND, model, tok, refuted, LABELS, device=CPU, max_len=32).metrics
    assert m["feedback"]["kept_negative"] == 1.0 and m["score"] == 0.0
    corrections = [Item(t, p, 0, source="correction") for t, p in zip(texts, shown)]
    assert evaluate(KIND, model, tok, corrections, LABELS, device=CPU, max_len=32).metrics["corrections"]["accuracy"] == 1.0


def test_no_validation_data_means_no_promotion(trained) -> None:
    model, tok = trained
    empty = evaluate(KIND, model, tok, [], LABELS, device=CPU, max_len=32)
    assert empty.metrics["score"] is None
    verdict = judge(KIND, [], empty, empty)
    assert not verdict.promote and "no validation data" in verdict.reason


def test_fixing_refuted_answers_counts_by_the_models_calibrated_confidence() -> None:
    """The pessimistic bound can never credit a fix of a −1'd answer; the estimate does, by how sure
    the candidate is of its new answer, scaled by how well its confidence matched its accuracy on
    the rows whose outcome is known."""
    plus = [Item(f"p {i}", 0, +1, source="feedback") for i in range(100)]  # known: label 0 is right
    minus = [Item(f"m {i}", 0, -1, source="feedback") for i in range(100)]  # label 0 was refuted
    items = plus + minus
    active = _evaluation(items, [0] * 200, [0.9] * 100 + [0.0] * 100)  # keeps every refuted answer
    candidate = _evaluation(items, [0] * 100 + [1] * 100, [0.9] * 100 + [0.8] * 100)  # fixes them, 80% sure
    cmp = compare(KIND, items, candidate, active, confidence=0.95)
    assert cmp.mean_lo == 0.0 and cmp.mean_hi == pytest.approx(0.5)
    assert cmp.mean_est == pytest.approx(0.4)  # half the rows, each 0.8 (calibration 100/90 is capped at 1)
    assert judge(KIND, items, candidate, active).promote


def test_an_over_confident_model_is_trusted_less() -> None:
    items = [Item(f"t {i}", 0, +1, source="feedback") for i in range(100)]
    right_half = [0] * 50 + [1] * 50  # right on half the rows
    assert calibration(KIND, items, right_half, [1.0] * 100) == pytest.approx(0.5)
    assert calibration(KIND, items, right_half, [0.25] * 100) == 1.0  # under-confident: not scaled up
    assert calibration(KIND, [Item("t", 0, -1, source="feedback")], [1], [0.9]) == 0.0  # nothing known


def test_classification_confidence_rules_out_a_refuted_label() -> None:
    import torch

    logits = torch.log(torch.tensor([0.5, 0.4, 0.1]))
    refuted = Item("t", 0, -1, source="feedback")
    assert KIND.confidence(refuted, logits, 1) == pytest.approx(0.4 / 0.5)
    assert KIND.confidence(refuted, logits, 0) == 0.0
    assert KIND.confidence(Item("t", 1), logits, 1) == pytest.approx(0.4)


# ---------------------------------------------------------------- a ratio metric: tagging's entity F1


def test_tagging_is_judged_on_entity_f1_not_on_exact_rows() -> None:
    """An active that finds nothing is exactly right on every text without entities (most tweets);
    a candidate that finds 40 of 100 entities but adds a false one to 120 of 300 empty texts is
    worse by exact rows (220 right against 300) and far better by entity F1 (0.31 against 0):
    it is promoted, and the other way round it is rejected."""
    from app.kinds.tagging import TagTarget, Tagging

    kind = Tagging()
    gold = [TagTarget(((0, 4, 0),)) for _ in range(100)] + [TagTarget(()) for _ in range(300)]
    items = [Item(f"text {i}", t) for i, t in enumerate(gold)]
    nothing = [TagTarget(()) for _ in items]
    found = [t if i < 40 else TagTarget(()) for i, t in enumerate(gold[:100])]
    found += [TagTarget(((5, 7, 0),)) if i < 120 else TagTarget(()) for i in range(300)]
    exact = lambda pred: sum(kind.outcome(it, p) for it, p in zip(items, pred))  # noqa: E731
    assert exact(found) < exact(nothing)
    cand = Evaluation(found, kind.gate_metrics(items, found, ["place"]), [0.5] * len(items))
    act = Evaluation(nothing, kind.gate_metrics(items, nothing, ["place"]), [0.5] * len(items))
    assert cand.metrics["examples"]["f1"] == pytest.approx(2 * 40 / (100 + 160)) and act.metrics["examples"]["f1"] == 0
    verdict = judge(kind, items, cand, act, min_rows=30)
    assert verdict.promote, verdict.reason
    assert "entity F1" in verdict.reason
    backwards = judge(kind, items, act, cand, min_rows=30)
    assert backwards.decision == "reject", backwards.reason


def _noisy_crowd(flip: float) -> tuple[list[Item], Evaluation, Evaluation, Evaluation, list[Item]]:
    """100 answers, 70 right and 30 wrong, from a client flipping 30% of its signals (exactly 30% of
    each group here).  The active keeps every shown answer; the candidate fixes the 30 wrong
    ones, 80% sure of each fix.  Returns (noisy rows, candidate, active, candidate on clean rows,
    the clean rows)."""
    truth = [+1] * 70 + [-1] * 30
    said = [+1] * 49 + [-1] * 21 + [-1] * 21 + [+1] * 9  # 21 of the right and 9 of the wrong flipped
    clean = [Item(f"t {i}", 0, s, source="feedback") for i, s in enumerate(truth)]
    noisy = [Item(f"t {i}", 0, s, source="feedback", flip=flip) for i, s in enumerate(said)]
    fixed = [0] * 70 + [1] * 30
    conf = [1.0] * 70 + [0.8] * 30

    def ev(items: list[Item], predicted: list[int], confidence: list[float]) -> Evaluation:
        flipped = [confidence[i] if it.flip > 0 else None for i, it in enumerate(items)]
        return Evaluation(predicted, KIND.gate_metrics(items, predicted, LABELS), confidence, flipped)

    candidate, active = ev(noisy, fixed, conf), ev(noisy, [0] * 100, [1.0] * 100)
    return noisy, candidate, active, ev(clean, fixed, conf), clean


def test_a_noisy_clients_signals_are_read_through_its_flips() -> None:
    """On the true signals the candidate's fixes are worth +0.24 (30 fixes, each 80% sure).  Read as
    if they were true, the flipped signals hide most of that (+1s on wrong answers it fixed count
    against it); read through the client's 30% flip rate the estimate is the clean one again."""
    noisy, candidate, active, clean_candidate, clean = _noisy_crowd(0.3)
    clean_est = compare(KIND, clean, clean_candidate, _evaluation(clean, [0] * 100, [1.0] * 100),
                        confidence=0.95).mean_est
    assert clean_est == pytest.approx(0.24)
    as_if_true = [replace(it, flip=0.0) for it in noisy]
    naive = compare(KIND, as_if_true, _evaluation(as_if_true, candidate.predicted, candidate.confidence),
                    _evaluation(as_if_true, active.predicted, active.confidence), confidence=0.95).mean_est
    read = compare(KIND, noisy, candidate, active, confidence=0.95).mean_est
    assert naive < 0.1
    assert read == pytest.approx(clean_est, abs=0.03)


def test_calibration_reads_a_noisy_clients_known_outcomes_through_its_flips() -> None:
    """The active keeps all 100 shown answers, 70 of them right: 70% accurate whatever the noise,
    though only 58 of its signals say so."""
    noisy, _, active, _, _ = _noisy_crowd(0.3)
    assert calibration(KIND, noisy, active.predicted, [1.0] * 100) == pytest.approx(0.70)
    as_if_true = [replace(it, flip=0.0) for it in noisy]
    assert calibration(KIND, as_if_true, active.predicted, [1.0] * 100) == pytest.approx(0.58)


def test_each_later_look_at_one_candidate_spends_half_the_error_of_the_one_before() -> None:
    looks = [look_confidence(0.95, k) for k in (1, 2, 3)]
    assert looks == pytest.approx([0.95, 0.975, 0.9875])
    assert sum(1 - c for c in looks) < 2 * (1 - 0.95)  # over every look, at most twice one look's error
    with pytest.raises(ValueError):
        look_confidence(0.95, 0)


def test_a_client_answering_at_random_does_not_move_the_comparison() -> None:
    noisy, candidate, active, _, _ = _noisy_crowd(0.3)
    coin = [Item(f"c {i}", 0, +1, source="feedback", flip=0.5) for i in range(100)]  # +1s on answers it changed
    items = noisy + coin

    def ev(base: Evaluation, extra: list[int], conf: float) -> Evaluation:
        predicted, confidence = base.predicted + extra, (base.confidence or []) + [conf] * 100
        return Evaluation(predicted, KIND.gate_metrics(items, predicted, LABELS), confidence,
                          (base.flipped or []) + [conf] * 100)

    with_coin = compare(KIND, items, ev(candidate, [1] * 100, 0.8), ev(active, [0] * 100, 1.0), confidence=0.95)
    alone = compare(KIND, noisy, candidate, active, confidence=0.95)
    assert with_coin.mean_est == pytest.approx(alone.mean_est)
