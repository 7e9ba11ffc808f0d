"""`flywheel simulate`: the users' decisions, metrics, arms, data sampling, targets and report
as units, and one `--quick` run end to end on the tiny BERT with data built here."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.simulate.arms import DEFAULT_ARMS, QUICK_ARMS, distinct, make_arm, parse_arms
from app.simulate.checks import run_checks
from app.simulate.data import DataError, build_scenario
from app.kinds.classification import Classification, label_metrics
from app.simulate.report import write_report
from app.simulate.users import Behaviour, Draws, Signal, assign_clients, decide

LABELS = ["bank", "movie", "weather"]
BASELINE = dict(correction_rate=0.3, noise=0.0, adversarial_share=0.0, lambda_data=0.5)


KIND = Classification()


def draws(noise: float = 0.9, correction: float = 0.9, pick: float = 0.0) -> Draws:
    return Draws(noise=noise, correction=correction, pick=pick)


# ---------------------------------------------------------------- users


def test_honest_user_says_right_or_wrong() -> None:
    b = Behaviour()
    assert decide("bank", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws()) == Signal(1)
    assert decide("movie", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws()) == Signal(-1)


def test_correction_rate_adds_the_right_label_to_some_negatives_only() -> None:
    b = Behaviour(correction_rate=0.3)
    assert decide("movie", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws(correction=0.1)) == Signal(-1, "bank")
    assert decide("movie", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws(correction=0.5)) == Signal(-1)
    assert decide("bank", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws(correction=0.1)) == Signal(1)


def test_oracle_gives_every_text_its_gold_label() -> None:
    b = Behaviour(oracle=True)
    assert decide("bank", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws()) == Signal(1, "bank")
    assert decide("movie", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws()) == Signal(-1, "bank")


def test_noise_and_the_adversary_flip_signals() -> None:
    b = Behaviour(noise=0.3)
    assert decide("bank", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws(noise=0.1)) == Signal(-1)
    assert decide("movie", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws(noise=0.1)) == Signal(1)
    assert decide("bank", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws(noise=0.5)) == Signal(1)
    hostile = decide("bank", "bank", behaviour=Behaviour(), labels=LABELS, kind=KIND, draws=draws(), hostile=True)
    assert hostile == Signal(-1)
    # A lying oracle names a wrong label, or confirms the wrong one it was shown.
    lie = decide("bank", "bank", behaviour=Behaviour(oracle=True), labels=LABELS, kind=KIND, draws=draws(pick=0.99), hostile=True)
    assert lie.signal == -1 and lie.correction in ("movie", "weather")
    lie = decide("movie", "bank", behaviour=Behaviour(oracle=True), labels=LABELS, kind=KIND, draws=draws(), hostile=True)
    assert lie == Signal(1, "movie")


def test_ignore_negatives_sends_no_bare_minus_one() -> None:
    b = Behaviour(send_negatives=False)
    assert decide("movie", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws()) is None
    assert decide("bank", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws()) == Signal(1)


def test_draws_are_the_same_for_a_text_in_every_arm() -> None:
    assert Draws.for_text(3, 17) == Draws.for_text(3, 17)
    assert Draws.for_text(3, 17) != Draws.for_text(3, 18)
    flips = sum(Draws.for_text(0, i).noise < 0.3 for i in range(2000)) / 2000
    assert 0.26 < flips < 0.34


def test_adversary_gets_its_share_of_the_traffic() -> None:
    owners = assign_clients(200, honest=3, adversarial_share=0.1, seed=1)
    assert owners.count(-1) == 20
    assert set(owners) == {-1, 0, 1, 2}
    assert owners == assign_clients(200, honest=3, adversarial_share=0.1, seed=1)
    assert -1 not in assign_clients(50, honest=2, adversarial_share=0.0, seed=1)


# ---------------------------------------------------------------- metrics


def test_accuracy_and_macro_f1() -> None:
    gold = ["a", "a", "b", "b"]
    pred = ["a", "b", "b", "b"]
    assert label_metrics(gold, pred)["accuracy"] == 0.75
    # F1(a) = 2·1/(2+1) = 2/3, F1(b) = 2·2/(2+3) = 4/5
    assert label_metrics(gold, pred)["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert label_metrics(["a"], ["c"])["macro_f1"] == 0.0
    with pytest.raises(ValueError):
        label_metrics([], [])


# ---------------------------------------------------------------- arms


def test_default_arms_and_duplicates() -> None:
    arms = parse_arms("all", **BASELINE)
    assert [a.name for a in arms] == list(DEFAULT_ARMS)
    assert [a.name for a in parse_arms(None, default=QUICK_ARMS, **BASELINE)] == list(QUICK_ARMS)
    same = distinct(arms)
    assert same["noise-0"] == "feedback"
    assert same["lambda-0.5"] == "feedback+corrections"
    assert same["noise-0.3"] == "noise-0.3"
    assert make_arm("signed", **BASELINE).conditions.feedback_loss == "signed"
    assert make_arm("robust", **BASELINE).conditions.feedback_loss == "robust"
    robust = parse_arms("feedback,noise-0.3,signed", **BASELINE, feedback_loss="robust")
    assert [a.conditions.feedback_loss for a in robust] == ["robust", "robust", "signed"]
    assert make_arm("lora", **BASELINE).conditions.finetune == "lora"
    assert make_arm("adversarial-0.2", **BASELINE).conditions.adversarial_share == 0.2
    assert make_arm("lambda-0.25", **BASELINE).conditions.behaviour.correction_rate == 0.3
    assert make_arm("supervised", **BASELINE).conditions.behaviour.oracle


@pytest.mark.parametrize("spec", ["nonsense", "noise-2", "adversarial-1", ","])
def test_bad_arms_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_arms(spec, **BASELINE)
    with pytest.raises(ValueError, match="feedback loss"):
        parse_arms("feedback", **BASELINE, feedback_loss="negated")


# ---------------------------------------------------------------- data

WORDS = {
    "bank": "lost card credit stolen missing wallet bank account money charged twice bill payment refund fee".split(),
    "movie": "movie film plot acting boring great wonderful awful brilliant dull loved hated".split(),
    "weather": "weather rain sunny cold hot tomorrow today forecast snow wind".split(),
}
FILLER = "i my me you is the a and to of in for with please help can what need tell".split()


def make_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """n distinct texts of two class words and two filler words, labels in turn."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = LABELS[len(rows) % len(LABELS)]
        words = rng.sample(WORDS[label], 2) + rng.sample(FILLER, 2)
        rng.shuffle(words)
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def test_scenario_keeps_test_texts_out_of_the_traffic(tmp_path: Path) -> None:
    test_rows = make_rows(30, seed=1)
    train = write_csv(tmp_path / "train.csv", test_rows[:10] + make_rows(90, seed=2))
    test = write_csv(tmp_path / "test.csv", test_rows)
    s = build_scenario(train_path=train, test_path=test, traffic_size=40, test_size=30, max_labels=None, seed=0)
    assert s.labels == LABELS
    assert len(s.traffic) == 40 and len(s.test) == 30
    assert not {e.text for e in s.traffic} & {e.text for e in s.test}
    again = build_scenario(train_path=train, test_path=test, traffic_size=40, test_size=30, max_labels=None, seed=0)
    assert again.traffic == s.traffic
    two = build_scenario(train_path=train, test_path=test, traffic_size=20, test_size=10, max_labels=2, seed=0)
    assert len(two.labels) == 2 and {e.label for e in two.traffic + two.test} <= set(two.labels)
    assert any("2 of the 3 labels" in n for n in two.notes)
    with pytest.raises(DataError, match="needs 500"):
        build_scenario(train_path=train, test_path=test, traffic_size=500, test_size=10, max_labels=None, seed=0)
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nhello,bank\n")
    with pytest.raises(DataError, match="text,label"):
        build_scenario(train_path=bad, test_path=test, traffic_size=1, test_size=1, max_labels=None, seed=0)


# ---------------------------------------------------------------- targets and report


def fake_arm(acc: list[float], gate: str, *, noise: float = 0.0, loss: str = "bounded", oracle: bool = False,
             send_negatives: bool = True, adversarial: float = 0.0, lam: float = 0.5) -> dict[str, Any]:
    rounds = []
    for r, (a, g) in enumerate(zip(acc, gate), start=1):
        status = {"P": "promoted", "R": "rejected", "F": "failed"}[g]
        rounds.append({
            "round": r, "accuracy": a, "macro_f1": a - 0.01, "candidate_accuracy": a if g == "P" else 0.1,
            "version": r, "signals_total": 10 * r,
            "signals_used": 10 * r, "traffic_accuracy": a,
            "gate": {"run_id": r, "status": status, "verdict": None, "reason": "x", "candidate_score": 0.5,
                     "active_score": 0.4, "validation_rows": 3},
            "sent": {"positive": 6, "negative": 4, "corrections": 0, "not_sent": 0, "from_adversary": 0},
            "run": {"id": r, "status": status, "duration_s": 1.0, "data_counts": {}, "error": None,
                    "loss_curve": [{"epoch": 1, "train_loss": 0.5 - r, "val_loss": 0.4}]},
            "seconds": 2.0,
        })
    return {
        "description": "fake", "seconds": 10.0, "data_dir": None,
        "conditions": {"behaviour": {"correction_rate": 0.0, "oracle": oracle, "send_negatives": send_negatives,
                                     "noise": noise},
                       "adversarial_share": adversarial, "lambda_data": lam, "feedback_loss": loss,
                       "finetune": "full"},
        "zero_shot_accuracy": 0.5, "zero_shot_macro_f1": 0.45,
        "accuracy_by_round": acc, "macro_f1_by_round": [a - 0.01 for a in acc],
        "signals_by_round": [10 * r for r in range(1, len(acc) + 1)],
        "signals_used_by_round": [10 * r for r in range(1, len(acc) + 1)],
        "gate_by_round": [x["gate"] for x in rounds], "version_by_round": list(range(1, len(acc) + 1)),
        "traffic_accuracy_by_round": acc, "candidate_accuracy_by_round": [x["candidate_accuracy"] for x in rounds],
        "rounds": rounds,
    }


def fake_result() -> dict[str, Any]:
    arms = {
        "feedback": fake_arm([0.6, 0.7, 0.8], "PPP"),
        "supervised": fake_arm([0.7, 0.8, 0.82], "PPP", oracle=True),
        "ignore-negatives": fake_arm([0.55, 0.6, 0.7], "PRP", send_negatives=False),
        "signed": fake_arm([0.4, 0.3, 0.3], "PRR", loss="signed"),
        "noise-0.3": fake_arm([0.6, 0.65, 0.77], "PPP", noise=0.3),
        "lambda-0.25": fake_arm([0.6, 0.7, 0.8], "PPP", lam=0.25),
        "lambda-0.75": fake_arm([0.6, 0.7, 0.8], "PPP", lam=0.75),
        "adversarial-0.1": fake_arm([0.6, 0.55, 0.7], "PPR", adversarial=0.1),
    }
    arms["noise-0"] = {**arms["feedback"], "same_as": "feedback"}
    return {
        "command": "flywheel simulate --train t.csv --test s.csv", "finished_at": "2025-01-01 00:00 UTC",
        "duration_s": 60.0, "machine": "2 CPU cores", "model": "tiny", "seed": 0,
        "dataset": {"name": "toy", "train": "t.csv", "test": "s.csv", "labels_in_file": 3, "labels": LABELS,
                    "notes": []},
        "sizes": {"rounds": 3, "traffic_per_round": 10, "traffic": 30, "test": 20, "labels": 3, "max_labels": None},
        "options": {"correction_rate": 0.3, "noise": 0.0, "adversarial_share": 0.0, "lambda": 0.5,
                    "honest_users": 3, "epochs": 3, "learning_rate": 5e-5, "batch_size": 16, "patience": 2,
                    "gate_tolerance": 0.01, "max_client_share": 0.5, "quick": True},
        "zero_shot_accuracy": 0.5, "arms": arms,
    }


def test_checks_measure_the_targets() -> None:
    checks = {c["name"]: c for c in run_checks(fake_result()["arms"])}
    assert checks["feedback_vs_supervised"]["met"] is True  # 0.80 / 0.82 = 0.976
    assert checks["bounded_vs_ignore_negatives"]["met"] is True
    assert checks["noise_cost"]["met"] is False  # 3 points
    assert "3.0 points" in checks["noise_cost"]["measured"]
    assert checks["adversarial_monotone"]["met"] is False  # round 2 promoted 0.55 after 0.60
    assert "rounds [2]" in checks["adversarial_monotone"]["measured"]
    assert "signed" in checks["signed_behaviour"]["measured"]
    assert run_checks({})[0]["met"] is None


def test_report_from_a_result(tmp_path: Path) -> None:
    md = write_report(fake_result(), tmp_path / "report")
    text = md.read_text()
    for png in ("accuracy_by_round.png", "macro_f1_by_round.png", "accuracy_by_signals.png", "noise_sweep.png",
                "lambda_sweep.png", "signed_vs_bounded.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000
        assert f"]({png})" in text
    assert "flywheel simulate --train t.csv" in text
    assert "3 rounds x 10 texts = 30 texts" in text
    assert "| noise-0 | = feedback" in text
    assert "**not met**" in text and "**met**" in text


# ---------------------------------------------------------------- end to end


def test_quick_run_end_to_end_on_the_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Real API and worker processes, users over HTTP; the JSON's accuracy is checked against an
    independent scoring of the final active version, loaded from the kept model store."""
    train = write_csv(tmp_path / "train.csv", make_rows(120, seed=5))
    test_rows = make_rows(150, seed=6)[120:]  # 30 texts, none of them in the traffic
    test = write_csv(tmp_path / "test.csv", test_rows)
    out, report, keep = tmp_path / "result.json", tmp_path / "report", tmp_path / "keep"
    env = {**os.environ, "FLYWHEEL_BASE_MODEL": str(tiny_model_dir), "FLYWHEEL_MAX_SEQ_LEN": "32"}
    cmd = [sys.executable, "-m", "app.cli", "simulate", "--train", str(train), "--test", str(test), "--quick",
           "--arms", "feedback,supervised,noise-0", "--rounds", "2", "--traffic-per-round", "36",
           "--test-size", "50", "--learning-rate", "3e-3", "--epochs", "4", "--batch-size", "8", "--threads", "1",
           "--json", str(out), "--report", str(report), "--keep-data", str(keep)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    result = json.loads(out.read_text())
    assert result["sizes"] == {"rounds": 2, "traffic_per_round": 36, "traffic": 72, "test": 30, "labels": 3,
                               "max_labels": 8}
    assert result["seed"] == 0 and 0 <= result["zero_shot_accuracy"] <= 1
    assert set(result["arms"]) == {"feedback", "supervised", "noise-0"}
    assert result["arms"]["noise-0"]["same_as"] == "feedback"
    for name, arm in result["arms"].items():
        for key in ("accuracy_by_round", "macro_f1_by_round", "signals_by_round", "gate_by_round"):
            assert len(arm[key]) == 2, (name, key)
        assert all(0 <= x <= 1 for x in arm["accuracy_by_round"] + arm["macro_f1_by_round"])
        assert all(x is None or 0 <= x <= 1 for x in arm["candidate_accuracy_by_round"])
        assert all(g["status"] in ("promoted", "rejected", "failed") for g in arm["gate_by_round"])
        assert arm["signals_by_round"][0] > 0 and arm["signals_by_round"][1] > arm["signals_by_round"][0]
    sup = result["arms"]["supervised"]
    assert sup["rounds"][0]["sent"]["corrections"] == 36  # the oracle labels every text
    assert (report / "report.md").exists() and (report / "accuracy_by_round.png").exists()

    # Independent scoring: load the version the API served after the last round and score the test set.
    import torch
    from sqlalchemy import create_engine, select

    from app.db.tables import ModelVersion
    from app.kinds import load_version
    from app.kinds.classification import predict_proba

    for name in ("feedback", "supervised"):
        arm = result["arms"][name]
        engine = create_engine(f"sqlite:///{Path(arm['data_dir']) / 'flywheel.db'}")
        with engine.connect() as conn:
            path = conn.scalar(select(ModelVersion.path).where(ModelVersion.version == arm["version_by_round"][-1]))
        engine.dispose()
        model, tokenizer, meta = load_version(Path(path), device=torch.device("cpu"))
        probs = predict_proba(model, tokenizer, [t for t, _ in test_rows], max_len=32, device=torch.device("cpu"))
        pred = [meta.labels[i] for i in probs.argmax(-1).tolist()]
        mine = sum(lab == p for (_, lab), p in zip(test_rows, pred)) / len(test_rows)
        assert arm["accuracy_by_round"][-1] == pytest.approx(mine, abs=1.5 / len(test_rows)), name
