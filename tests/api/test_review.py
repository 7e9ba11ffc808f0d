"""Asking for the feedback that teaches most: `feedback_wanted` on every prediction, within the
task's `policy.feedback_budget`, and GET /v1/tasks/{task}/review (the queue of predictions a
person should label).  The tiny model is random, so the API tests assert properties that hold
whatever it answers."""

from __future__ import annotations

import random
import re

import pytest

from app.kinds import Answer, get_kind
from app.learning.value import rarity_boosts, value_of
from app.services.asking import AskBudget
from app.services.review import RARE, REFUTED, REVIEW_MAX_LIMIT, UNCERTAIN
from support import WORDS
from support.api import LABELS, assert_problem, create_task, predict, table_counts, TABLES

CLASSIFICATION = get_kind("classification")


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))) for _ in range(n)]


def _predict_many(client, n: int, *, task: str = "tickets", per_call: int = 10, headers: dict | None = None,
                  seed: int = 0) -> list[dict]:
    texts = _texts(n, seed)
    out: list[dict] = []
    for i in range(0, n, per_call):
        out += predict(client, task=task, texts=texts[i:i + per_call], headers=headers)["predictions"]
    return out


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _review(client, task: str = "tickets", headers: dict | None = None, **params):
    return client.get(f"/v1/tasks/{task}/review", params=params, headers=headers)


def _feedback(client, pid: str, headers: dict | None = None, **body) -> None:
    r = client.post(f"/v1/predictions/{pid}/feedback", json=body, headers=headers)
    assert r.status_code == 201, r.text


def _metric(client, name: str, task: str) -> float:
    text = client.get("/metrics").text
    m = re.search(rf'^{name}\{{task="{task}"\}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


# ---------------------------------------------------------------- the budget on plain numbers


def _windows_within(decisions: list[bool], window: int, budget: float) -> bool:
    asked = 0
    for i, d in enumerate(decisions):
        asked += d
        if i >= window:
            asked -= decisions[i - window]
        if asked > budget * min(i + 1, window) + 1e-9:
            return False
    return True


def test_budget_asks_about_the_highest_values_and_never_more_than_the_budget() -> None:
    rng = random.Random(1)
    b = AskBudget(0.1, window=1000, warmup=50)
    values = [rng.random() for _ in range(5000)]
    decisions = [b.decide(v) for v in values]
    asked = [v for v, d in zip(values, decisions) if d]
    assert 0.07 <= len(asked) / len(values) <= 0.1
    assert min(asked) > 0.8  # the (1 − 0.1) quantile of uniform values is 0.9; the cold threshold 0.8
    assert _windows_within(decisions, 1000, 0.1)  # the hard cap holds in every sliding window
    assert b.asked_share <= 0.1


def test_budget_quantile_follows_the_values() -> None:
    b = AskBudget(0.25, window=100, warmup=10)
    for v in range(100):  # 0 … 99
        b.decide(v / 100)
    assert b.threshold() == pytest.approx(0.75)
    for _ in range(100):  # the distribution moves up: the bar moves with it
        b.decide(0.9)
    assert b.threshold() == pytest.approx(0.9)


def test_budget_cap_holds_even_when_every_value_is_high() -> None:
    b = AskBudget(0.2, window=50, warmup=5)
    decisions = [b.decide(1.0) for _ in range(500)]
    assert decisions[:4] == [False] * 4 and decisions[4]  # the first ask at the 1/0.2 = 5th prediction
    assert sum(decisions) == 100
    assert _windows_within(decisions, 50, 0.2)


def test_budget_before_warm_up_asks_only_about_high_values() -> None:
    b = AskBudget(0.5, warmup=50, cold_threshold=0.8)
    assert not any(b.decide(0.5) for _ in range(40))
    assert b.decide(0.95)


def test_budget_zero_never_asks_and_one_always_does() -> None:
    never, always = AskBudget(0.0), AskBudget(1.0)
    for v in [0.0, 0.5, 1.0, 2.0, float("nan")] * 100:
        assert never.decide(v) is False
        assert always.decide(v) is True


def test_rarity_boost_from_labelled_rows() -> None:
    assert rarity_boosts(["a", "b", "c"], {}) == {"a": 1.0, "b": 1.0, "c": 1.0}  # nothing labelled: no boost
    boosts = rarity_boosts(["a", "b", "c"], {"a": 6, "b": 3})  # mean 3; c: 1 + (1 − 1/4)
    assert boosts == {"a": 1.0, "b": 1.0, "c": pytest.approx(1.75)}
    assert rarity_boosts(["a", "b"], {"a": 3, "b": 1})["b"] == pytest.approx(1 + 1 / 3)  # mean 2
    assert rarity_boosts(["a", "b"], {"a": 1000})["b"] == pytest.approx(2 - 1 / 501)  # nearly doubled
    assert rarity_boosts(["a", "b"], {"a": 1})["b"] == pytest.approx(1 + 1 / 3)  # one row swings little


def test_value_is_uncertainty_times_boost() -> None:
    sure = Answer("a", {"a": 0.9, "b": 0.05, "c": 0.05}, {})
    toss = Answer("b", {"a": 0.45, "b": 0.46, "c": 0.09}, {})
    assert value_of(CLASSIFICATION, sure, {})[0] == pytest.approx(0.15)
    assert value_of(CLASSIFICATION, toss, {})[0] == pytest.approx(0.99)
    assert value_of(CLASSIFICATION, sure, {"a": 2.0}) == (pytest.approx(0.3), 2.0)


# ---------------------------------------------------------------- feedback_wanted on predictions


def test_budget_zero_never_wants_feedback(client) -> None:
    create_task(client, policy={"feedback_budget": 0})
    preds = _predict_many(client, 60)
    assert all(p["feedback_wanted"] is False for p in preds)
    assert _metric(client, "flywheel_feedback_wanted_total", "tickets") == 0


def test_budget_one_always_wants_feedback(client) -> None:
    create_task(client, policy={"feedback_budget": 1})
    preds = _predict_many(client, 30)
    assert all(p["feedback_wanted"] is True for p in preds)
    [one] = predict(client, text="lost card")["predictions"]
    assert one["feedback_wanted"] is True
    assert _metric(client, "flywheel_feedback_wanted_total", "tickets") == 31


def test_budget_is_kept_over_many_predictions(client) -> None:
    task = create_task(client, policy={"feedback_budget": 0.2})
    assert task["policy"]["feedback_budget"] == 0.2
    preds = _predict_many(client, 100)
    asked = [p for p in preds if p["feedback_wanted"]]
    assert all(isinstance(p["feedback_wanted"], bool) for p in preds)
    assert 0 < len(asked) <= 20  # at most the budget, and not nothing
    assert _metric(client, "flywheel_feedback_wanted_total", "tickets") == len(asked)


def test_default_budget_is_five_percent(client) -> None:
    task = create_task(client)
    assert task["policy"]["feedback_budget"] == 0.05
    preds = _predict_many(client, 19)  # the first ask can come at the 20th prediction at the earliest
    assert not any(p["feedback_wanted"] for p in preds)


@pytest.mark.parametrize("bad", [1.5, -0.1, "half"])
def test_budget_outside_zero_one_is_422_and_creates_nothing(client, bad) -> None:
    r = client.post("/v1/tasks", json={"name": "t", "labels": ["a", "b"], "policy": {"feedback_budget": bad}})
    assert_problem(r, 422, "validation", "policy.feedback_budget")
    assert table_counts(client) == {m.__tablename__: 0 for m in TABLES}


# ---------------------------------------------------------------- the review queue


def test_review_lists_refuted_first_and_leaves_out_what_is_known(client) -> None:
    create_task(client)
    preds = predict(client, texts=_texts(8))["predictions"]
    refuted_old, refuted_new, corrected, confirmed = preds[:4]
    _feedback(client, refuted_old["id"], signal=-1)
    _feedback(client, refuted_new["id"], signal=-1)
    wrong = next(lab for lab in LABELS if lab != corrected["label"])
    _feedback(client, corrected["id"], signal=-1, correction=wrong)
    _feedback(client, confirmed["id"], signal=1)

    r = _review(client)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "tickets"
    items = body["items"]
    ids = [it["prediction_id"] for it in items]
    assert corrected["id"] not in ids and confirmed["id"] not in ids
    assert len(items) == 6  # two −1s and the four without any signal
    assert {ids[0], ids[1]} == {refuted_old["id"], refuted_new["id"]}
    for it in items[:2]:
        assert it["reason"] == REFUTED and it["signal"] == -1
    rest = items[2:]
    assert all(it["signal"] is None and it["reason"] in (UNCERTAIN, RARE) for it in rest)
    assert [it["value"] for it in rest] == sorted((it["value"] for it in rest), reverse=True)
    by_id = {p["id"]: p for p in preds}
    boosts = rarity_boosts(LABELS, {wrong: 1})  # the one correction is the only labelled row
    for it in items:  # the value is recomputed from the stored scores
        p = by_id[it["prediction_id"]]
        assert it["label"] == p["label"] and it["scores"] == pytest.approx(p["scores"])
        assert it["text"] and it["created_at"]
        u = CLASSIFICATION.uncertainty(Answer(p["label"], p["scores"], {}))
        assert it["value"] == pytest.approx(u * boosts[p["label"]], abs=1e-5)
        assert it["reason"] != RARE  # one row makes no label rare (boost at most 1.25)

    limited = _review(client, limit=1).json()["items"]
    assert len(limited) == 1 and limited[0]["reason"] == REFUTED
    assert len(_review(client, limit=3).json()["items"]) == 3
    assert len(_review(client, limit=REVIEW_MAX_LIMIT).json()["items"]) == 6

    _feedback(client, refuted_new["id"], signal=-1, correction=next(lab for lab in LABELS
                                                                  if lab != refuted_new["label"]))
    ids = [it["prediction_id"] for it in _review(client).json()["items"]]
    assert ids[0] == refuted_old["id"] and refuted_new["id"] not in ids


def test_review_boosts_labels_with_few_labelled_rows(client) -> None:
    create_task(client)
    examples = [{"text": f"bill {w}", "label": "billing"} for w in WORDS[:3]]
    examples += [{"text": f"card {w}", "label": "card_lost"} for w in WORDS[:3]]
    r = client.post("/v1/tasks/tickets/examples", json={"examples": examples})
    assert r.status_code == 201, r.text
    preds = _predict_many(client, 30)
    items = _review(client, limit=100).json()["items"]
    assert len(items) == 30
    by_id = {p["id"]: p for p in preds}
    boosts = rarity_boosts(LABELS, {"billing": 3, "card_lost": 3})
    assert boosts == {"billing": 1.0, "card_lost": 1.0, "weather": pytest.approx(1 + 2 / 3)}
    for it in items:  # billing and card_lost have 3 rows each, weather none: weather's value is boosted
        p = by_id[it["prediction_id"]]
        u = CLASSIFICATION.uncertainty(Answer(p["label"], p["scores"], {}))
        assert it["reason"] == (RARE if p["label"] == "weather" else UNCERTAIN)
        assert it["value"] == pytest.approx(u * boosts[p["label"]], abs=1e-5)
    values = [it["value"] for it in items]
    assert values == sorted(values, reverse=True)


def test_a_client_sees_only_its_own_predictions(client) -> None:
    create_task(client)
    keys = {}
    for name in ("alpha", "beta"):
        r = client.post("/v1/clients", json={"name": name, "tasks": ["tickets"]})
        assert r.status_code == 201
        keys[name] = _bearer(r.json()["key"])
    mine = {p["id"] for p in predict(client, texts=_texts(3, 1), headers=keys["alpha"])["predictions"]}
    theirs = {p["id"] for p in predict(client, texts=_texts(2, 2), headers=keys["beta"])["predictions"]}
    admin_own = {p["id"] for p in predict(client, texts=_texts(1, 3))["predictions"]}

    r = _review(client, headers=keys["alpha"])
    assert r.status_code == 200, r.text
    assert {it["prediction_id"] for it in r.json()["items"]} == mine
    assert {it["prediction_id"] for it in _review(client, headers=keys["beta"]).json()["items"]} == theirs
    assert {it["prediction_id"] for it in _review(client).json()["items"]} == mine | theirs | admin_own
    assert _review(client, headers=_bearer("fw_not_a_key")).status_code == 401


@pytest.mark.parametrize("limit", [0, -1, REVIEW_MAX_LIMIT + 1])
def test_review_limit_outside_its_range_is_422_naming_limit(client, limit) -> None:
    create_task(client)
    assert_problem(_review(client, limit=limit), 422, "validation", "query.limit")


def test_review_limit_that_is_not_a_number_is_422(client) -> None:
    create_task(client)
    body = assert_problem(_review(client, limit="many"), 422, "validation", None)
    assert "limit" in body["field"]


def test_review_of_unknown_task_is_404(client) -> None:
    assert_problem(_review(client, task="nope"), 404, "unknown-task", "task", mentions=("nope",))
