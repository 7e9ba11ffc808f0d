"""`flywheel simulate`: the users' decisions, metrics, arms, data sampling, seeds (mean and
spread), targets (the gate's decisions among them), progress and report as units, and `--quick`
runs end to end on the tiny BERT with data built here (one seed; two seeds with the active and
random arms)."""

from __future__ import annotations

import csv
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from app.tools.simulate.arms import DEFAULT_ARMS, QUICK_ARMS, distinct, make_arm, parse_arms
from app.tools.simulate.checks import gate_letter, run_checks, verdicts
from app.tools.simulate.data import DataError, build_scenario
from app.kinds.classification import Classification, label_metrics
from app.tools.simulate.progress import PlainProgress, SimulationProgress, make_progress
from app.tools.simulate.report import write_report
from app.tools.simulate.result import GateOutcome, SeedRun, SimulationResult, aggregate, fmt
from app.tools.simulate import users
from app.tools.simulate.users import ADVERSARY, CARELESS, TRUSTED, Behaviour, Draws, Signal, assign_clients

LABELS = ["bank", "movie", "weather"]
BASELINE = dict(correction_rate=0.3, noise=0.0, adversarial_share=0.0, lambda_data=0.5)


KIND = Classification()


def decide(shown: str, gold: str, **kw: Any) -> Signal | None:
    """The one signal a user sends about an answer that has no parts (None: nothing)."""
    sigs = users.decide(shown, gold, **kw)
    assert len(sigs) <= 1, sigs
    return sigs[0] if sigs else None


def draws(noise: float = 0.9, correction: float = 0.9, pick: float = 0.0, label: float = 0.9,
          coin: float = 0.9) -> Draws:
    return Draws(noise=noise, correction=correction, pick=pick, label=label, coin=coin)


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
    hostile = decide("bank", "bank", behaviour=Behaviour(), labels=LABELS, kind=KIND, draws=draws(), owner=ADVERSARY)
    assert hostile == Signal(-1)
    # A lying oracle names a wrong label, or confirms the wrong one it was shown.
    lie = decide("bank", "bank", behaviour=Behaviour(oracle=True), labels=LABELS, kind=KIND, draws=draws(pick=0.99),
                 owner=ADVERSARY)
    assert lie.signal == -1 and lie.correction in ("movie", "weather")
    lie = decide("movie", "bank", behaviour=Behaviour(oracle=True), labels=LABELS, kind=KIND, draws=draws(), owner=ADVERSARY)
    assert lie == Signal(1, "movie")


def test_a_careless_client_answers_on_a_coin_toss_and_a_trusted_one_labels_truthfully() -> None:
    noisy = Behaviour(noise=0.3)
    def say(shown: str, owner: int, **d: float) -> Signal | None:
        return decide(shown, "bank", behaviour=noisy, labels=LABELS, kind=KIND, draws=draws(**d), owner=owner)

    assert say("bank", CARELESS, coin=0.4) == Signal(-1) and say("bank", CARELESS, coin=0.6) == Signal(1)
    assert say("bank", CARELESS, noise=0.1, coin=0.6) == Signal(1)  # the users' noise is not the careless key's
    # The trusted key ignores the noise every user suffers and labels what it sees.
    assert say("bank", TRUSTED, noise=0.1) == Signal(1, "bank") and say("movie", TRUSTED, noise=0.1) == Signal(-1, "bank")
    careless = sum(Draws.for_text(0, i).coin < 0.5 for i in range(2000)) / 2000
    assert 0.46 < careless < 0.54


def test_ignore_negatives_sends_no_bare_minus_one() -> None:
    b = Behaviour(send_negatives=False)
    assert decide("movie", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws()) is None
    assert decide("bank", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws()) == Signal(1)


def test_draws_are_the_same_for_a_text_in_every_arm() -> None:
    assert Draws.for_text(3, 17) == Draws.for_text(3, 17)
    assert Draws.for_text(3, 17) != Draws.for_text(3, 18)
    flips = sum(Draws.for_text(0, i).noise < 0.3 for i in range(2000)) / 2000
    assert 0.26 < flips < 0.34


def test_active_user_labels_exactly_the_answers_the_server_asks_about() -> None:
    b = Behaviour(label_when_asked=True)
    for d in (draws(label=0.0), draws(label=0.99)):  # the random draw plays no part
        def say(shown: str, wanted: bool) -> Signal | None:
            return decide(shown, "bank", behaviour=b, labels=LABELS, kind=KIND, draws=d, wanted=wanted)

        assert say("bank", True) == Signal(1, "bank") and say("movie", True) == Signal(-1, "bank")
        assert say("bank", False) == Signal(1) and say("movie", False) == Signal(-1)
    # Users of the other arms ignore feedback_wanted.
    assert decide("movie", "bank", behaviour=Behaviour(), labels=LABELS, kind=KIND, draws=draws(),
                  wanted=True) == Signal(-1)


def test_random_user_labels_a_seeded_share_of_the_texts() -> None:
    b = Behaviour(label_share=0.2)
    assert decide("bank", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws(label=0.1)) == Signal(1, "bank")
    assert decide("movie", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws(label=0.1)) == Signal(-1, "bank")
    assert decide("movie", "bank", behaviour=b, labels=LABELS, kind=KIND, draws=draws(label=0.3),
                  wanted=True) == Signal(-1)  # asked or not: only the draw decides
    labelled = sum(Draws.for_text(0, i).label < 0.2 for i in range(2000)) / 2000
    assert 0.17 < labelled < 0.23
    # The label draw came last: the draws that existed before it are unchanged (same runs as before).
    rng, d = random.Random("flywheel-simulate:3:17"), Draws.for_text(3, 17)
    assert (d.noise, d.correction, d.pick) == (rng.random(), rng.random(), rng.random())
    with pytest.raises(ValueError, match="label_share"):
        Behaviour(label_share=1.5)


def test_adversary_gets_its_share_of_the_traffic() -> None:
    owners = assign_clients(200, honest=3, adversarial_share=0.1, seed=1)
    assert owners.count(-1) == 20
    assert set(owners) == {-1, 0, 1, 2}
    assert owners == assign_clients(200, honest=3, adversarial_share=0.1, seed=1)
    assert -1 not in assign_clients(50, honest=2, adversarial_share=0.0, seed=1)


def test_careless_and_trusted_clients_get_their_own_disjoint_shares() -> None:
    owners = assign_clients(200, honest=3, adversarial_share=0.1, careless_share=0.15, trusted_share=0.05, seed=1)
    assert (owners.count(ADVERSARY), owners.count(CARELESS), owners.count(TRUSTED)) == (20, 30, 10)
    # the adversary's texts are the ones it had before the other clients existed
    before = assign_clients(200, honest=3, adversarial_share=0.1, seed=1)
    assert [i for i, o in enumerate(owners) if o == ADVERSARY] == [i for i, o in enumerate(before) if o == ADVERSARY]
    with pytest.raises(ValueError, match="no traffic"):
        assign_clients(10, honest=1, adversarial_share=0.5, careless_share=0.5, seed=0)


def test_scenario_arms_set_their_clients() -> None:
    base = dict(correction_rate=0.0, noise=0.3, adversarial_share=0.0, lambda_data=0.5)
    assert make_arm("careless-0.2", **base).conditions.careless_share == 0.2
    trusted = make_arm("trusted-0.05", **base).conditions
    assert trusted.trusted_share == 0.05 and trusted.behaviour.noise == 0.3  # noisy users beside a QA key
    mixture = make_arm("mixture", **base).conditions
    assert (mixture.behaviour.noise, mixture.careless_share, mixture.adversarial_share) == (0.1, 0.1, 0.1)
    assert "careless client" in make_arm("careless-0.2", **base).describe()


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


def test_each_kind_scores_a_test_set_the_way_its_users_judge_it() -> None:
    from app.kinds import get_kind

    labels = get_kind("classification").score_answers(LABELS, ["bank", "movie"], ["bank", "bank"])
    assert (labels.main, labels.error) == (0.5, None)
    # on -4 … 4: errors 0, 2 and 0 (MAE 2/3); within the tolerance of 0.8: two of three
    scores = get_kind("rating").score_answers(["-4", "4"], ["-4", "0", "4"], ["-4", "2", "4"])
    assert scores.main == pytest.approx(2 / 3) and scores.error == pytest.approx(2 / 3) and scores.second == 1.0
    gold = '[{"start":0,"end":6,"label":"place"}]'
    spans = get_kind("tagging").score_answers(["place"], [gold, "[]"], [gold, gold])
    assert spans.main == pytest.approx(2 / 3) and spans.second == 0.5  # precision 1/2, recall 1; one text exact


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


def test_active_and_random_arms() -> None:
    active = make_arm("active-0.2", **BASELINE)
    assert active.conditions.feedback_budget == 0.2 and active.conditions.behaviour.label_when_asked
    assert active.conditions.behaviour.label_share == 0 and active.conditions.behaviour.correction_rate == 0
    rnd = make_arm("random-0.1", **BASELINE)
    assert rnd.conditions.feedback_budget == 0 and rnd.conditions.behaviour.label_share == 0.1
    assert not rnd.conditions.behaviour.label_when_asked
    assert "feedback_wanted" in active.describe() and "random 10%" in rnd.describe()
    # The plain names take X from --correction-budget (default 0.05).
    assert make_arm("active", **BASELINE).conditions == make_arm("active-0.05", **BASELINE).conditions
    plain = parse_arms("active,random,active-0.1,random-0.2,random-0", **BASELINE, correction_budget=0.1)
    assert plain[0].conditions.feedback_budget == 0.1 and plain[1].conditions.behaviour.label_share == 0.1
    same = distinct(plain + parse_arms("feedback", **BASELINE))
    assert same["active-0.1"] == "active" and same["random-0.2"] == "random-0.2"
    assert same["feedback"] == "random-0"  # random with share 0 is the feedback arm
    with pytest.raises(ValueError, match="correction-budget"):
        make_arm("active", **BASELINE, correction_budget=1.5)


@pytest.mark.parametrize("spec", ["nonsense", "noise-2", "adversarial-1", ",", "active-1.5", "random-2"])
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
             send_negatives: bool = True, adversarial: float = 0.0, lam: float = 0.5,
             cand: list[float | None] | None = None, seed: int = 0, corrections: list[int] | None = None,
             budget: float = 0.0, asked: bool = False, share: float = 0.0) -> dict[str, Any]:
    """One seed's run of an arm, as SeedRun.to_json writes it.  Gate letters: P promoted, R
    rejected, I inconclusive (the run ends rejected), F failed.  `cand`: each round's candidate
    test accuracy (default: the round's accuracy when promoted, 0.1 otherwise)."""
    rounds = []
    corrections = corrections or [0] * len(acc)
    for r, (a, g) in enumerate(zip(acc, gate), start=1):
        status = {"P": "promoted", "R": "rejected", "I": "rejected", "F": "failed"}[g]
        verdict = {"P": "promote", "R": "reject", "I": "inconclusive", "F": None}[g]
        c = cand[r - 1] if cand is not None else (a if g == "P" else 0.1)
        rounds.append({
            "round": r, "accuracy": a, "macro_f1": a - 0.01, "candidate_accuracy": c,
            "version": r, "signals_total": 10 * r,
            "signals_used": 10 * r, "traffic_accuracy": a,
            "mae": None, "candidate_mae": None,
            "gate": {"run_id": r, "status": status, "verdict": verdict, "reason": "x", "candidate_score": 0.5,
                     "active_score": 0.4, "validation_rows": 3, "second_look": None},
            "sent": {"positive": 6, "negative": 4, "corrections": corrections[r - 1], "not_sent": 0,
                     "from_adversary": 0, "asked": corrections[r - 1] if asked else 0},
            "run": {"id": r, "status": status, "duration_s": 1.0, "data_counts": {}, "error": None,
                    "loss_curve": [{"epoch": 1, "train_loss": 0.5 - r, "val_loss": 0.4}],
                    "candidate_version_id": None},
            "seconds": 2.0,
        })
    return {
        "description": "fake", "seconds": 10.0, "data_dir": None, "seed": seed,
        "conditions": {"behaviour": {"correction_rate": 0.0, "oracle": oracle, "send_negatives": send_negatives,
                                     "noise": noise, "label_when_asked": asked, "label_share": share},
                       "adversarial_share": adversarial, "careless_share": 0.0, "trusted_share": 0.0,
                       "lambda_data": lam, "feedback_loss": loss,
                       "finetune": "full", "feedback_budget": budget},
        "corrections_by_round": corrections, "asked_by_round": [x["sent"]["asked"] for x in rounds],
        "zero_shot_accuracy": 0.5, "zero_shot_macro_f1": 0.45,
        "accuracy_by_round": acc, "macro_f1_by_round": [a - 0.01 for a in acc],
        "signals_by_round": [10 * r for r in range(1, len(acc) + 1)],
        "signals_used_by_round": [10 * r for r in range(1, len(acc) + 1)],
        "gate_by_round": [x["gate"] for x in rounds], "version_by_round": list(range(1, len(acc) + 1)),
        "traffic_accuracy_by_round": acc, "candidate_accuracy_by_round": [x["candidate_accuracy"] for x in rounds],
        "rounds": rounds,
    }


def seed_run(acc: list[float], gate: str, **kw: Any) -> SeedRun:
    """`fake_arm`'s run, as the simulator holds it."""
    return SeedRun.from_json(fake_arm(acc, gate, **kw))


def arms_of(result: dict[str, Any]) -> dict[str, Any]:
    return SimulationResult.from_json(result).arms


def fake_result() -> dict[str, Any]:
    arms = {
        "feedback": fake_arm([0.6, 0.7, 0.8], "PPP"),
        "supervised": fake_arm([0.7, 0.8, 0.82], "PPP", oracle=True),
        "ignore-negatives": fake_arm([0.55, 0.6, 0.7], "PRP", send_negatives=False),
        "signed": fake_arm([0.4, 0.3, 0.3], "PRR", loss="signed"),
        "noise-0.3": fake_arm([0.6, 0.65, 0.77], "PPP", noise=0.3),
        "noise-0.1": fake_arm([0.6, 0.7, 0.76], "PPP", noise=0.1),
        "adversarial-0.2": fake_arm([0.6, 0.7, 0.79], "PPP", adversarial=0.2),
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
    checks = {c.name: c.to_json() for c in run_checks(arms_of(fake_result()))}
    assert checks["feedback_vs_supervised"]["met"] is True  # 0.80 / 0.82 = 0.976
    assert checks["bounded_vs_ignore_negatives"]["met"] is True
    assert checks["noise_recovery"]["met"] is True  # (0.77 − 0.5) / (0.8 − 0.5) = 90% of the gain
    assert "90% of the gain" in checks["noise_recovery"]["measured"]
    assert checks["noise_cost_0.1"]["met"] is False  # 4 points
    assert "4.0 points" in checks["noise_cost_0.1"]["measured"]
    assert checks["hostile_cost"]["met"] is True  # 1 point
    assert checks["adversarial_monotone"]["met"] is False  # round 2 promoted 0.55 after 0.60
    assert "rounds [2]" in checks["adversarial_monotone"]["measured"]
    assert "signed" in checks["signed_behaviour"]["measured"]
    assert run_checks({})[0].met is None


def test_aggregate_gives_mean_and_spread_over_seeds() -> None:
    one = fake_arm([0.6, 0.8], "PP", seed=3, corrections=[2, 4])
    single_arm = aggregate([SeedRun.from_json(one)])
    single = single_arm.to_json()
    assert {k: single[k] for k in one} == one  # one seed: the run as it was, plus the new fields
    assert single["seeds"] == [3] and single["accuracy_mean_by_round"] == [0.6, 0.8]
    assert single["accuracy_std_by_round"] == [None, None] and single["accuracy_min_by_round"] == [0.6, 0.8]
    assert "by_seed" not in single and [r.to_json() for r in single_arm.runs] == [one]
    assert single_arm.round_std(2) == 0.0

    seeds = [fake_arm([0.6, 0.8], "PP", seed=0, corrections=[2, 4]),
             fake_arm([0.7, 0.9], "PR", seed=1, corrections=[4, 6]),
             fake_arm([0.8, 0.7], "RI", seed=2, corrections=[0, 2])]
    typed = aggregate([SeedRun.from_json(x) for x in seeds])
    arm = typed.to_json()
    assert arm["seeds"] == [0, 1, 2] and arm["by_seed"] == seeds and [r.to_json() for r in typed.runs] == seeds
    assert arm["accuracy_by_round"] == pytest.approx([0.7, 0.8]) == arm["accuracy_mean_by_round"]
    assert arm["accuracy_std_by_round"] == pytest.approx([0.1, 0.1])  # sample std (n - 1)
    assert arm["accuracy_min_by_round"] == [0.6, 0.7] and arm["accuracy_max_by_round"] == [0.8, 0.9]
    assert arm["corrections_by_round"] == pytest.approx([2, 4]) and arm["signals_by_round"] == [10, 20]
    assert arm["zero_shot_accuracy"] == 0.5 and arm["zero_shot_accuracy_spread"]["std"] == 0.0
    assert arm["seconds"] == 30.0
    for per_run in ("rounds", "gate_by_round", "candidate_accuracy_by_round", "version_by_round", "seed"):
        assert per_run not in arm  # only per seed
    assert typed.round_std(1) == pytest.approx(0.1) and typed.round_std(0) == 0.0
    # candidates (default: the accuracy when promoted, else 0.1): 0.6, 0.7, 0.1 then 0.8, 0.1, 0.1
    assert arm["candidate_accuracy_std_by_round"] == pytest.approx([0.3215, 0.4041], abs=1e-4)
    assert typed.gate_spread(2) == pytest.approx(0.4041, abs=1e-4)
    assert verdicts(typed) == "PP PR RI"
    assert fmt(0.8123, 0.0101) == "0.812 ± 0.010" and fmt(0.8123) == "0.812" and fmt(None) == "–"
    with pytest.raises(ValueError):
        aggregate([])


def test_gate_letters() -> None:
    def gate(status: str, verdict: str | None) -> GateOutcome:
        return GateOutcome(1, status, verdict, None, None, None, None)

    assert gate_letter(gate("promoted", "promote")) == "P"
    assert gate_letter(gate("rejected", "reject")) == "R"
    assert gate_letter(gate("rejected", "inconclusive")) == "I"
    assert gate_letter(gate("failed", None)) == "F"


def gate_arms() -> dict[str, Any]:
    """Two arms, two seeds, two rounds, from zero-shot 0.5; candidates' test accuracy by hand."""
    return {
        # spread in round 1: stdev(0.6, 0.62) = 0.014; in round 2: stdev(0.6, 0.64) = 0.028 (candidates: 0)
        "feedback": aggregate([
            seed_run([0.6, 0.6], "PR", cand=[0.6, 0.7], seed=0),  # r2: +0.10 and rejected
            seed_run([0.62, 0.64], "PI", cand=[0.62, 0.70], seed=1),  # r2: +0.08 and inconclusive
        ]),
        # spread in round 1: stdev(0.4, 0.48) = 0.057; in round 2: the candidates', stdev(0.45, 0.49) = 0.028
        "signed": aggregate([
            seed_run([0.4, 0.45], "PP", cand=[0.4, 0.45], seed=0),  # r1: -0.10 and promoted; r2 +0.05, promoted
            seed_run([0.48, 0.48], "PR", cand=[0.48, 0.49], seed=1),  # r1 -0.02: within the spread; r2 +0.01 too
        ]),
    }


def test_gate_checks_on_every_round_of_every_seed() -> None:
    checks = {c.name: c.to_json() for c in run_checks(gate_arms())}
    better = checks["better_rejected"]
    # better by more than the spread: feedback s0r1, s0r2, s1r1, s1r2, signed s0r2; kept out: two of them
    assert better["met"] is False
    assert "2 of 5 better candidates not promoted (40%; 1 rejected, 1 inconclusive" in better["measured"]
    assert "feedback seed 0 round 2 (+10.0 points)" in better["measured"]
    assert "feedback seed 1 round 2 (+8.0 points)" in better["measured"]
    worse = checks["worse_promoted"]
    assert worse["met"] is False and "1 of 5 promoted candidates worse" in worse["measured"]
    assert "signed seed 0 round 1 (-10.0 points)" in worse["measured"]

    # One seed: the spread is 0, so any gain counts.
    one = {"feedback": aggregate([seed_run([0.6, 0.6], "PR", cand=[0.6, 0.61])])}
    checks = {c.name: c.to_json() for c in run_checks(one)}
    assert checks["better_rejected"]["met"] is False and "1 of 2" in checks["better_rejected"]["measured"]
    assert checks["worse_promoted"]["met"] is True
    one = {"feedback": aggregate([seed_run([0.6, 0.7], "PP")])}
    checks = {c.name: c.to_json() for c in run_checks(one)}
    assert checks["better_rejected"]["met"] is True and "0 of 2" in checks["better_rejected"]["measured"]
    # Rejected candidates not scored (--no-score-rejected): the rate cannot be measured.
    unscored = {"feedback": aggregate([seed_run([0.6, 0.6], "PR", cand=[0.6, None])])}
    check = next(c.to_json() for c in run_checks(unscored) if c.name == "better_rejected")
    assert check["met"] is None and "--score-rejected" in check["measured"]


def test_active_against_random_with_twice_the_corrections() -> None:
    def active(acc: float, seed: int) -> SeedRun:
        return seed_run([0.6, acc], "PP", seed=seed, corrections=[2, 2], budget=0.05, asked=True)

    def rnd(acc: float, seed: int, share: float = 0.1) -> SeedRun:
        return seed_run([0.6, acc], "PP", seed=seed, corrections=[4, 4], share=share)

    arms = {"active": aggregate([active(0.80, 0), active(0.78, 1)]),
            "random-0.1": aggregate([rnd(0.75, 0), rnd(0.80, 1)])}
    check = next(c.to_json() for c in run_checks(arms, budget=0.05) if c.name == "active_vs_random")
    assert check["met"] is True  # mean 0.79 >= 0.775
    assert "active 0.7900 ± 0.0141 with 4 corrections vs random-0.1 0.7750 ± 0.0354 with 8" in check["measured"]
    arms["random-0.1"] = aggregate([rnd(0.85, 0), rnd(0.80, 1)])
    assert next(c for c in run_checks(arms) if c.name == "active_vs_random").met is False
    # Not the pair it needs: say which arms are.
    arms = {"active": aggregate([active(0.8, 0)]), "random-0.05": aggregate([rnd(0.8, 0, share=0.05)])}
    check = next(c.to_json() for c in run_checks(arms, budget=0.05) if c.name == "active_vs_random")
    assert check["met"] is None and "active needs random-0.1" in check["measured"]
    check = next(c.to_json() for c in run_checks({}, budget=0.05) if c.name == "active_vs_random")
    assert check["met"] is None and "active-0.05 (or active) and random-0.1" in check["measured"]


def test_plain_progress_when_not_a_terminal() -> None:
    import io

    out = io.StringIO()
    console = Console(file=out, width=60)
    assert not console.is_terminal
    now = [0.0]
    progress = make_progress(console, ["feedback", "random-0.2"], rounds=2, seeds=2)
    assert isinstance(progress, PlainProgress)
    progress.clock = lambda: now[0]
    with progress:
        progress.status("feedback seed 0", "starting the service")
        for t in (0.5, 1.0, 2.0):  # changes within the interval: not shown
            now[0] = t
            progress.status("feedback seed 0", f"run 1 running epoch 1/2 step {t}")
        now[0] = 6.0
        progress.status("feedback seed 0", "run 1 running epoch 2/2 step 3 loss 0.1234 " + "x" * 80)
        now[0] = 6.5
        progress.status("random-0.2 seed 1", "starting the service")  # a new arm or seed: at once
        progress.round_done("random-0.2 seed 1", seed_run([0.8125], "I", corrections=[7]).rounds[0])
        progress.round_done("noise-0", None)  # an arm not run again: counted, not shown
    lines = out.getvalue().splitlines()
    assert len(lines) == 5, lines
    assert lines[0].endswith("feedback seed 0: starting the service")
    assert "epoch 2/2" in lines[1] and lines[1].endswith("x" * 80)  # one line, not wrapped
    assert "random-0.2 seed 1: starting the service" in lines[2]
    assert "random-0.2 seed 1 round 1/2: test accuracy 0.812 (gate I, 7 corrections) [1/8 rounds]" in lines[3]
    assert "done: 2/8 rounds" in lines[4]
    assert "\x1b" not in out.getvalue()  # no control codes in a log

    tty = Console(file=io.StringIO(), force_terminal=True)
    bar = make_progress(tty, ["feedback"], rounds=2)
    assert isinstance(bar, SimulationProgress)
    with bar:
        bar.status("feedback", "starting the service")
        bar.round_done("feedback", seed_run([0.5], "P").rounds[0])
        bar.round_done("feedback", None)
    assert bar.progress.tasks[0].completed == 2


def test_report_needs_matplotlib_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import app.tools.simulate.data as data
    import app.tools.simulate.runner as runner
    from app.cli import cli

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError

    def no_work(*_: object, **__: object) -> None:
        raise AssertionError("work started before the matplotlib check")

    monkeypatch.setattr(data, "build_scenario", no_work)
    monkeypatch.setattr(runner, "run_all", no_work)
    train = write_csv(tmp_path / "train.csv", make_rows(30, seed=1))
    result = CliRunner().invoke(cli, ["simulate", "--train", str(train), "--test", str(train), "--quick",
                                      "--report", str(tmp_path / "report")])
    assert result.exit_code == 2, result.output
    assert "--report needs matplotlib" in " ".join(result.output.split())  # stdout and stderr (click >= 8.2)
    assert not (tmp_path / "report").exists()


def test_report_from_a_result(tmp_path: Path) -> None:
    md = write_report(SimulationResult.from_json(fake_result()), tmp_path / "report")
    text = md.read_text()
    for png in ("accuracy_by_round.png", "macro_f1_by_round.png", "accuracy_by_signals.png", "noise_sweep.png",
                "lambda_sweep.png", "signed_vs_bounded.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000
        assert f"]({png})" in text
    assert "flywheel simulate --train t.csv" in text
    assert "3 rounds x 10 texts = 30 texts" in text
    assert "| noise-0 | = feedback" in text
    assert "**not met**" in text and "**met**" in text


def test_report_with_seeds_and_the_active_and_random_arms(tmp_path: Path) -> None:
    result = SimulationResult.from_json(fake_result())
    result.seeds = [0, 1]
    result.options.correction_budget = 0.05
    result.arms = {
        "feedback": aggregate([seed_run([0.6, 0.7, 0.8], "PPP", seed=0), seed_run([0.62, 0.7, 0.78], "PRI", seed=1)]),
        "active": aggregate([seed_run([0.6, 0.7, 0.8], "PPP", seed=s, budget=0.05, asked=True, corrections=[1, 2, 2])
                             for s in (0, 1)]),
        "random-0.1": aggregate([seed_run([0.6, 0.7, 0.75 + s / 100], "PPP", seed=s, share=0.1,
                                          corrections=[3, 3, 4]) for s in (0, 1)]),
    }
    result.checks = run_checks(result.arms, budget=0.05)
    text = write_report(result, tmp_path / "report").read_text()
    assert (tmp_path / "report" / "accuracy_by_corrections.png").stat().st_size > 1000
    assert "| feedback | 50.0 ± 0.0 | 61.0 ± 1.4 | 70.0 ± 0.0 | 79.0 ± 1.4 |" in text
    assert "| PPP PRI |" in text and "I inconclusive" in text
    assert "2 seeds (0, 1)" in text and "seed 1:" in text
    assert "active reaches the accuracy that random reaches" in text
    assert "inconclusive (not promoted)" in text


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


def test_two_seeds_with_the_active_and_random_arms_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:
    """--seeds 2 on the tiny model: every arm runs once per seed on the same traffic; the random
    arm's users label exactly the texts their seed's draws pick; the active arm's users label
    exactly the answers that came with feedback_wanted (none while the server does not send it)."""
    train = write_csv(tmp_path / "train.csv", make_rows(60, seed=7))
    test = write_csv(tmp_path / "test.csv", make_rows(80, seed=8)[60:])
    out = tmp_path / "result.json"
    env = {**os.environ, "FLYWHEEL_BASE_MODEL": str(tiny_model_dir), "FLYWHEEL_MAX_SEQ_LEN": "32"}
    T = 30
    cmd = [sys.executable, "-m", "app.cli", "simulate", "--train", str(train), "--test", str(test), "--quick",
           "--seeds", "2", "--arms", "feedback,active-0.2,random-0.2", "--rounds", "1", "--traffic-per-round",
           str(T), "--test-size", "20", "--epochs", "1", "--batch-size", "8", "--threads", "1", "--json", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    result = json.loads(out.read_text())
    assert result["seed"] == 0 and result["seeds"] == [0, 1] and result["options"]["seeds"] == 2
    for name, arm in result["arms"].items():
        assert arm["seeds"] == [0, 1] and [r["seed"] for r in arm["by_seed"]] == [0, 1], name
        accs = [r["accuracy_by_round"][0] for r in arm["by_seed"]]
        assert arm["accuracy_by_round"] == pytest.approx([sum(accs) / 2])
        assert arm["accuracy_min_by_round"] == [min(accs)] and arm["accuracy_max_by_round"] == [max(accs)]
        assert arm["accuracy_std_by_round"][0] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
        for run in arm["by_seed"]:
            assert len(run["gate_by_round"]) == 1
            assert run["corrections_by_round"] == [run["rounds"][0]["sent"]["corrections"]]
        assert "rounds" not in arm
    scenario = build_scenario(train_path=train, test_path=test, traffic_size=T, test_size=20, max_labels=8, seed=0)
    assert result["sizes"]["traffic"] == len(scenario.traffic) == T
    feedback, active, rnd = (result["arms"][n] for n in ("feedback", "active-0.2", "random-0.2"))
    assert all(r["corrections_by_round"] == [0] for r in feedback["by_seed"])
    # random-0.2: the right label on exactly the texts whose draw for that seed is below 0.2
    for run in rnd["by_seed"]:
        expected = sum(Draws.for_text(run["seed"], i).label < 0.2 for i in range(T))
        assert run["corrections_by_round"] == [expected], run["seed"]
    # active-0.2: the right label on exactly the answers the server marked feedback_wanted
    for run in active["by_seed"]:
        assert run["corrections_by_round"] == run["asked_by_round"]
        assert run["asked_by_round"][0] <= T
    assert sum(active["corrections_by_round"]) > 0, "the server sent no feedback_wanted: true"
    assert all(r["asked_by_round"] == [0] for arm in (feedback, rnd) for r in arm["by_seed"])  # budget 0
    names = {c["name"]: c for c in result["checks"]}
    assert names["active_vs_random"]["met"] is None and "random-0.4" in names["active_vs_random"]["measured"]
    assert {"better_rejected", "worse_promoted"} <= set(names)
    # Not a terminal: plain progress lines, one per finished round of each arm and seed.
    for label in ("feedback seed 0", "feedback seed 1", "active-0.2 seed 0", "random-0.2 seed 1"):
        assert f"{label} round 1/1: test accuracy" in proc.stderr, proc.stderr[-2000:]
    assert "\x1b[" not in proc.stderr


def test_results_of_separate_seeds_combine_into_one_multi_seed_result(tmp_path: Path) -> None:
    from app.tools.simulate.combine import combine_files

    paths = []
    for seed, accs in ((0, [0.6, 0.7, 0.8]), (1, [0.6, 0.72, 0.84])):
        result = fake_result()
        result["seed"] = seed
        result["arms"] = {"feedback": fake_arm(accs, "PPP", seed=seed),
                          "supervised": fake_arm([0.7, 0.8, 0.85], "PPR", oracle=True, seed=seed)}
        paths.append(tmp_path / f"seed{seed}.json")
        paths[-1].write_text(json.dumps(result))
    combined = combine_files(paths, command="flywheel simulate-combine a b").to_json()
    feedback = combined["arms"]["feedback"]
    assert combined["seeds"] == [0, 1] and [r["seed"] for r in feedback["by_seed"]] == [0, 1]
    assert feedback["accuracy_by_round"] == pytest.approx([0.6, 0.71, 0.82])
    assert feedback["accuracy_std_by_round"][-1] == pytest.approx(statistics.stdev([0.8, 0.84]))
    assert len(combined["combined_from"]) == 2
    checks = {c["name"]: c for c in combined["checks"]}
    assert checks["feedback_vs_supervised"]["met"] is True  # 0.82 / 0.85
    (tmp_path / "other.json").write_text(json.dumps({**fake_result(), "arms": {"lora": fake_arm([0.5], "P")}}))
    with pytest.raises(ValueError, match="share no arm"):
        combine_files([paths[0], tmp_path / "other.json"], command="x")


NOISE_RUNS = Path(__file__).resolve().parents[2] / "reports" / "noise"
SPREAD = {"seeds", "accuracy_mean_by_round", "accuracy_std_by_round", "accuracy_min_by_round", "accuracy_max_by_round",
          "candidate_accuracy_std_by_round", "zero_shot_accuracy_spread"}


def assert_kept(old: Any, new: Any, where: str = "", seed_entry: bool = False) -> None:
    """Every key and value of `old` is in `new` (which may have more keys), but for the spread
    fields a one-seed entry carried inside `by_seed` (they restated that seed's numbers)."""
    if isinstance(old, dict):
        assert isinstance(new, dict), where
        for k, v in old.items():
            if not (seed_entry and k in SPREAD):
                assert k in new, f"{where}.{k} lost"
                assert_kept(v, new[k], f"{where}.{k}", seed_entry or k == "by_seed")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(old) == len(new), where
        for i, (a, b) in enumerate(zip(old, new)):
            assert_kept(a, b, f"{where}[{i}]", seed_entry)
    else:
        assert type(old) is type(new) and old == new, f"{where}: {old!r} != {new!r}"


def test_committed_results_read_back_and_combine_as_they_did() -> None:
    """A result file an earlier version wrote reads into the typed result and writes back with
    every key and value it had; what this version writes reads back byte for byte; and combining
    the three seeds of reports/noise gives the committed combined result's numbers and targets."""
    from app.tools.simulate.combine import combine_files, read_result

    path = NOISE_RUNS / "runs" / "500-seed0.json"
    again = read_result(path).to_json()
    assert_kept(json.loads(path.read_text()), again)
    assert json.dumps(SimulationResult.from_json(again).to_json(), indent=1) == json.dumps(again, indent=1)

    committed = json.loads((NOISE_RUNS / "500-3seeds" / "result.json").read_text())
    runs = [NOISE_RUNS / "runs" / f for f in ("500-seed0.json", "500-all-seed1.json", "500-all-seed2.json")]
    combined = combine_files(runs, command=committed["command"]).to_json()
    assert combined["checks"] == committed["checks"] and combined["seeds"] == [0, 1, 2]
    assert_kept(committed, combined)


# ---------------------------------------------------------------- a rating scenario


def write_scores(path: Path, n: int, seed: int) -> Path:
    """A text,score CSV: bank words score −3, weather words +3 (on −4 … +4)."""
    rows = [(t, "-3" if lab == "bank" else "3") for t, lab in make_rows(n, seed) if lab in ("bank", "weather")]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "score", "source"])
        w.writerows((t, s, "made") for t, s in rows)
    return path


def test_rating_user_says_right_within_the_tolerance() -> None:
    from app.kinds import get_kind

    kind, points = get_kind("rating"), ["-4", "4"]
    draws = Draws(noise=0.9, correction=0.0, pick=0.0, label=0.9, coin=0.9)
    honest = Behaviour(correction_rate=1.0)
    assert decide("2.5", "3", behaviour=honest, labels=points, draws=draws, kind=kind).signal == 1  # 0.5 <= 0.8
    wrong = decide("1.9", "3", behaviour=honest, labels=points, draws=draws, kind=kind)
    assert wrong.signal == -1 and wrong.correction == "3"


def test_rating_scenario_from_a_score_file(tmp_path: Path) -> None:
    train, test = write_scores(tmp_path / "train.csv", 80, 1), write_scores(tmp_path / "test.csv", 30, 2)
    s = build_scenario(train_path=train, test_path=test, traffic_size=20, test_size=10, max_labels=None, seed=0)
    assert s.kind == "rating" and s.value_range == (-3.0, 3.0) and s.labels == []
    wide = build_scenario(train_path=train, test_path=test, traffic_size=20, test_size=10, max_labels=None, seed=0,
                          options={"range": [-4.0, 4.0]})
    assert wide.value_range == (-4.0, 4.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("text,score\nfine,high\n")
    with pytest.raises(DataError, match="not a number"):
        build_scenario(train_path=bad, test_path=test, traffic_size=1, test_size=1, max_labels=None, seed=0)


def test_rating_run_end_to_end_on_the_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A rating task through the real API and worker: MAE and Spearman per round, and the checks
    on the MAE gap and the literal signed loss."""
    train, test = write_scores(tmp_path / "train.csv", 120, 5), write_scores(tmp_path / "test.csv", 30, 6)
    out = tmp_path / "result.json"
    env = {**os.environ, "FLYWHEEL_BASE_MODEL": str(tiny_model_dir), "FLYWHEEL_MAX_SEQ_LEN": "32"}
    cmd = [sys.executable, "-m", "app.cli", "simulate", "--train", str(train), "--test", str(test),
           "--arms", "feedback,supervised", "--rounds", "2", "--traffic-per-round", "30", "--test-size", "30",
           "--learning-rate", "3e-3", "--epochs", "4", "--batch-size", "8", "--threads", "1", "--range", "-4,4",
           "--anchor", "-4=lost stolen fee", "--anchor", "4=sunny weather", "--json", str(out),
           "--report", str(tmp_path / "report")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dataset"]["kind"] == "rating" and result["dataset"]["range"] == [-4.0, 4.0]
    for name, arm in result["arms"].items():
        assert len(arm["mae_by_round"]) == 2 and 0 <= arm["zero_shot_mae"] <= 8, name
        assert all(0 <= x <= 8 for x in arm["mae_by_round"]) and all(0 <= x <= 1 for x in arm["accuracy_by_round"])
    sup = result["arms"]["supervised"]
    assert sup["rounds"][0]["sent"]["corrections"] == 30
    for arm in result["arms"].values():  # never worse: the gate keeps out what does not hold up
        assert arm["mae_by_round"][-1] <= arm["zero_shot_mae"] + 0.5, arm["mae_by_round"]
    names = {c["name"]: c for c in result["checks"]}
    assert "rating_gap_closed" in names and names["rating_gap_closed"]["measured"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Test MAE after each round" in report and (tmp_path / "report" / "mae_by_round.png").exists()


# ---------------------------------------------------------------- a tagging scenario

PLACES = "london paris berlin tokyo".split()


def write_tagged(path: Path, n: int, seed: int) -> Path:
    """JSON lines of filler words with one place name (a span) in every other text."""
    rng = random.Random(seed)
    lines, seen = [], set()
    while len(lines) < n:
        words = rng.sample(FILLER, 3)
        spans = []
        if len(lines) % 2 == 0:
            at = rng.randrange(4)
            words.insert(at, rng.choice(PLACES))
            start = len(" ".join(words[:at])) + (1 if at else 0)
            spans = [{"start": start, "end": start + len(words[at]), "label": "place"}]
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            lines.append(json.dumps({"text": text, "spans": spans}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_tagging_user_judges_each_span_and_corrects_with_the_full_set() -> None:
    from app.kinds import get_kind

    tagging = get_kind("tagging")

    def decide_spans(shown: str, gold: str, **kw: Any) -> list[Signal]:
        return users.decide(shown, gold, labels=["place"], kind=tagging, **kw)

    gold = '[{"start":0,"end":6,"label":"place"}]'
    shown = '[{"start":0,"end":6,"label":"place"},{"start":7,"end":9,"label":"place"}]'
    honest = Behaviour()
    calm = Draws(noise=0.9, correction=0.9, pick=0.0, label=0.9, coin=0.9)
    assert decide_spans(gold, gold, behaviour=honest, draws=calm) == [Signal(1)]
    assert decide_spans(shown, gold, behaviour=honest, draws=calm) == [Signal(1, span=0), Signal(-1, span=1)]
    assert decide_spans("[]", gold, behaviour=honest, draws=calm) == [Signal(-1)]
    corrects = decide_spans(shown, gold, behaviour=Behaviour(correction_rate=1.0), draws=calm)
    assert corrects == [Signal(-1, gold)] and corrects[0].body(tagging)["correction"] == json.loads(gold)
    lies = decide_spans(shown, gold, behaviour=honest, draws=calm, owner=ADVERSARY)
    assert lies == [Signal(-1, span=0), Signal(1, span=1)]
    assert decide_spans(shown, gold, behaviour=Behaviour(correction_rate=1.0), draws=calm, owner=ADVERSARY) == [
        Signal(1, shown)]


def test_tagging_run_end_to_end_on_the_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A tagging task from JSON lines through the real API and worker, per-span feedback over
    HTTP, entity F1 per round in the result and the report."""
    train, test = write_tagged(tmp_path / "train.jsonl", 80, 5), write_tagged(tmp_path / "test.jsonl", 20, 6)
    out = tmp_path / "result.json"
    env = {**os.environ, "FLYWHEEL_BASE_MODEL": str(tiny_model_dir), "FLYWHEEL_MAX_SEQ_LEN": "32"}
    cmd = [sys.executable, "-m", "app.cli", "simulate", "--train", str(train), "--test", str(test),
           "--arms", "feedback,supervised", "--rounds", "2", "--traffic-per-round", "30", "--test-size", "20",
           "--learning-rate", "3e-3", "--epochs", "4", "--batch-size", "8", "--threads", "1", "--json", str(out),
           "--report", str(tmp_path / "report")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dataset"]["kind"] == "tagging" and result["dataset"]["labels"] == ["place"]
    fb = result["arms"]["feedback"]
    sent = fb["rounds"][0]["sent"]
    assert sent["positive"] + sent["negative"] >= 30  # one signal per text at least, one per span shown
    assert result["arms"]["supervised"]["rounds"][0]["sent"]["corrections"] == 30
    for arm in result["arms"].values():
        assert all(0 <= x <= 1 for x in [arm["zero_shot_accuracy"], *arm["accuracy_by_round"]])
    assert "entity F1" in (tmp_path / "report" / "report.md").read_text()
