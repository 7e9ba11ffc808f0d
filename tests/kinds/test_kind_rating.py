"""The `rating` kind end to end on the tiny model, SQLite and PostgreSQL: create with a range and
anchors, scores that never leave the range, feedback and corrections checked against the range,
examples as JSON and CSV, a retrain with the squared error that moves scores toward the truth,
promotion and rollback; plus the losses (the literal signed term rewards running away, the
bounded one stops at the margin) and the metrics."""

from __future__ import annotations

import random
from collections.abc import Callable

import httpx
import pytest
import torch

from app.core.config import Settings
from app.kinds.rating import TOLERANCE, Rating, feedback_losses, scale_points, score_metrics, spearman
from app.process.worker import Worker
from support.api import problem
from support.learning import FAST_POLICY, WORDS, FILLER
from support.waiting import wait_until

RANGE = [-4, 4]
ANCHORS = {"-4": "lost stolen charged twice fee", "4": "sunny weather forecast"}
POLICY = {**FAST_POLICY, "gate_tolerance": 1.0, "max_recall_drop": 1.0}




def scored_texts(n: int, seed: int) -> list[tuple[str, float]]:
    """Texts whose true score is −3 (bank words) or +3 (weather words), alternating."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic, score = ("bank", -3.0) if i % 2 == 0 else ("weather", 3.0)
        out.append((" ".join(rng.sample(WORDS[topic], 2) + rng.sample(FILLER, 2) + [str(i)]), score))
    return out


def create(http: httpx.Client, **fields: object) -> httpx.Response:
    body = {"name": "stars", "kind": "rating", "range": RANGE, "anchors": ANCHORS, "policy": POLICY, **fields}
    return http.post("/v1/tasks", json=body)


def scores(http: httpx.Client, texts: list[str]) -> tuple[int, list[float]]:
    r = http.post("/v1/tasks/stars/predict", json={"texts": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["model_version"], [p["score"] for p in body["predictions"]]


def mae(pred: list[float], truth: list[float]) -> float:
    return sum(abs(p - t) for p, t in zip(pred, truth)) / len(truth)


def test_rating_loop_create_predict_feedback_retrain_promote_rollback(http: httpx.Client, settings: Settings) -> None:
    r = create(http)
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["kind"] == "rating" and task["range"] == [-4.0, 4.0] and task["labels"] == ["-4", "4"]
    assert task["anchors"] == ANCHORS

    data = scored_texts(48, seed=1)
    examples, traffic = data[:24], data[24:]
    r = http.post("/v1/tasks/stars/examples", json={"examples": [{"text": t, "score": y} for t, y in examples[:12]]})
    assert r.status_code == 201, r.text
    csv = "text,score\n" + "".join(f"{t},{y}\n" for t, y in examples[12:])
    r = http.post("/v1/tasks/stars/examples", content=csv, headers={"Content-Type": "text/csv"})
    assert r.status_code == 201 and r.json()["imported"] == 12, r.text

    version0, before = scores(http, [t for t, _ in traffic])
    assert version0 == 0 and all(-4 <= s <= 4 for s in before)
    preds = http.post("/v1/tasks/stars/predict", json={"texts": [t for t, _ in traffic]}).json()["predictions"]
    assert all(set(p) == {"id", "score", "feedback_wanted"} for p in preds)
    for i, (p, (_, gold)) in enumerate(zip(preds, traffic)):
        right = abs(p["score"] - gold) <= 0.8
        body = {"signal": 1} if right else {"signal": -1, **({"correction": gold} if i % 2 else {})}
        r = http.post(f"/v1/predictions/{p['id']}/feedback", json=body)
        assert r.status_code == 201 and r.json()["correction"] == body.get("correction"), r.text

    run_id = http.post("/v1/tasks/stars/retrain").json()["run_id"]
    assert Worker(settings).run_once() == "promoted"
    run = http.get(f"/v1/runs/{run_id}").json()
    gate = run["gate"]
    assert gate["verdict"] == "promote"
    assert {"mae", "spearman", "within_tolerance"} <= set(gate["candidate"]["examples"])
    assert gate["candidate"]["examples"]["mae"] < gate["active"]["examples"]["mae"]

    wait_until(lambda: scores(http, [traffic[0][0]])[0] == 1, 60, "the API to serve version 1")
    _, after = scores(http, [t for t, _ in traffic])
    truth = [y for _, y in traffic]
    assert all(-4 <= s <= 4 for s in after)
    assert mae(after, truth) < mae(before, truth) - 0.5, (mae(before, truth), mae(after, truth))

    assert http.post("/v1/tasks/stars/models/0/activate").status_code == 200
    wait_until(lambda: scores(http, [traffic[0][0]])[0] == 0, 60, "the API to serve version 0 again")
    assert scores(http, [t for t, _ in traffic])[1] == pytest.approx(before, abs=1e-3)


def test_rating_without_anchors_starts_in_the_middle(client) -> None:
    assert client.post("/v1/tasks", json={"name": "plain", "kind": "rating", "range": [1, 5]}).status_code == 201
    preds = client.post("/v1/tasks/plain/predict", json={"texts": ["rain today", "lost card"]}).json()["predictions"]
    assert [p["score"] for p in preds] == [3.0, 3.0]
    review = client.get("/v1/tasks/plain/review").json()["items"]
    assert len(review) == 2 and all(item["value"] >= 0.99 for item in review)  # the middle: as unsure as can be


@pytest.mark.parametrize("body, field", [
    ({"range": [4, -4]}, "range"),
    ({"range": [1]}, "range"),
    ({"range": None}, "range"),
    ({"labels": ["a", "b"]}, "labels"),
    ({"anchors": {"9": "too high"}}, "anchors.9"),
    ({"anchors": {"high": "not a number"}}, "anchors.high"),
])
def test_bad_rating_tasks_are_422_naming_the_field(client, body: dict, field: str) -> None:
    full = {"name": "bad", "kind": "rating", "range": RANGE, **body}
    problem(client.post("/v1/tasks", json=full), 422, None, field)
    assert client.get("/v1/tasks").json() == []


def test_classification_refuses_a_range(client) -> None:
    r = client.post("/v1/tasks", json={"name": "c", "labels": ["a", "b"], "range": [0, 1]})
    problem(r, 422, "field-not-for-kind", "range")


def test_rating_feedback_and_examples_outside_the_range_are_422_and_change_nothing(client) -> None:
    assert create(client).status_code == 201
    pid = client.post("/v1/tasks/stars/predict", json={"text": "rain today"}).json()["predictions"][0]["id"]
    for correction in (9, -4.5, "lots", True):
        problem(client.post(f"/v1/predictions/{pid}/feedback", json={"signal": -1, "correction": correction}),
                422, None, "correction")
    for row, field in [({"text": "x", "score": 5}, "examples[0].score"), ({"text": "x", "label": "good"},
                       "examples[0].label"), ({"text": "x"}, "examples[0].score")]:
        problem(client.post("/v1/tasks/stars/examples", json={"examples": [row]}), 422, None, field)
    r = client.post("/v1/tasks/stars/examples", content="text,score\nfine,2\nbad,12\n",
                    headers={"Content-Type": "text/csv"})
    problem(r, 422, None, "score")
    counts = client.get("/v1/tasks/stars").json()["counts"]
    assert counts["feedback"]["total"] == 0 and counts["examples"]["total"] == 0


# ---------------------------------------------------------------- units


def test_signed_loss_rewards_running_away_and_bounded_stops_at_the_margin() -> None:
    shown = torch.tensor([0.5])
    minus = torch.tensor([-1])
    far, farther = torch.tensor([[0.8, 0.0]]), torch.tensor([[1.0, 0.0]])
    signed = [feedback_losses(o, shown, minus, "signed").item() for o in (far, farther)]
    assert signed[1] < signed[0] < 0  # always more to gain by running further
    bounded = [feedback_losses(o, shown, minus, "bounded").item() for o in (far, farther)]
    assert bounded == [0.0, 0.0]  # past the margin a −1 asks nothing more
    near = torch.tensor([[0.55, 0.0]])
    assert feedback_losses(near, shown, minus, "bounded").item() > 0
    high, at_it = torch.tensor([0.9]), torch.tensor([[0.9, 0.0]], requires_grad=True)
    feedback_losses(at_it, high, minus, "bounded").sum().backward()
    assert at_it.grad[0, 0] > 0  # a refuted high score is pushed down, toward the middle, even from where it is
    plus = torch.tensor([1])
    assert feedback_losses(near, shown, plus, "bounded").item() == pytest.approx(0.05 ** 2)


def test_scale_points_metrics_and_outcomes() -> None:
    assert scale_points([1, 5], {"3": "ok"}) == ["1", "3", "5"]
    m = score_metrics([0.0, 0.5, 1.0], [0.0, 0.6, 0.9], width=8.0)
    assert m["mae"] == pytest.approx(8 * 0.2 / 3) and m["spearman"] == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0) and spearman([1, 1], [1, 2]) is None
    kind = Rating()

    class Row:
        def __init__(self, label: float, signal: int) -> None:
            self.label, self.signal = label, signal

    assert kind.outcome(Row(0.5, 0), 0.55) == 1.0 and kind.outcome(Row(0.5, 0), 0.8) == 0.0
    # on feedback only a kept score's outcome is known
    assert kind.outcome(Row(0.5, 1), 0.5) == 1.0 and kind.outcome(Row(0.5, -1), 0.5) == 0.0
    assert kind.outcome(Row(0.5, 1), 0.55) is None and kind.outcome(Row(0.5, -1), 0.55) is None
    # a moved score is credited by the error it saves, in units of the right band's width
    assert kind.confidence(Row(0.5, 1), None, 0.5) == pytest.approx(1.0)
    assert kind.confidence(Row(0.5, 1), None, 0.55) == pytest.approx(1.0 - 0.0125 / 0.2)  # truth evenly in the band
    far = [kind.confidence(Row(0.5, 1), None, p) for p in (0.8, 0.9)]
    assert 0 > far[0] > far[1]  # a +1'd score moved far keeps costing the farther it goes
    assert kind.confidence(Row(0.5, -1), None, 0.5) == pytest.approx(0.0)
    # after a −1 near an end of the scale, moving toward the middle saves error, outward costs it,
    # and so does running past the middle
    inward = [kind.confidence(Row(0.2, -1), None, p) for p in (0.3, 0.4, 0.9)]
    assert inward[1] > inward[0] > 0 > inward[2]
    assert kind.confidence(Row(0.2, -1), None, 0.1) < 0


def test_the_gate_estimates_moved_rating_scores_from_what_the_signal_allows() -> None:
    """A candidate that moves every −1'd score a tolerance toward the middle, and keeps +1'd ones
    close, wins on held-out feedback, although almost no outcome is known exactly."""
    from app.learning.dataset import Item
    from app.learning.gate import Evaluation, judge

    kind = Rating()
    rows = [Item(f"t{i}", 0.8, -1, source="feedback") for i in range(60)]
    rows += [Item(f"u{i}", 0.4, +1, source="feedback") for i in range(30)]
    active = [it.label for it in rows]  # the scores shown
    moved = [0.7 if it.signal < 0 else 0.41 for it in rows]
    conf = lambda pred: [kind.confidence(it, None, p) for it, p in zip(rows, pred)]  # noqa: E731
    cand = Evaluation(moved, kind.gate_metrics(rows, moved, ["-4", "4"]), conf(moved))
    act = Evaluation(active, kind.gate_metrics(rows, active, ["-4", "4"]), conf(active))
    verdict = judge(kind, rows, cand, act, min_rows=30)
    assert verdict.comparison.mean_est > 0 and verdict.promote, verdict.reason
    stay = judge(kind, rows, act, act, min_rows=30)
    assert stay.comparison.mean_est == 0


def test_held_out_signals_never_promote_a_rating_model_with_a_larger_error() -> None:
    """Truths spread about the middle, a served model off by about version 0's error, and the
    simulated user's ±1 on it.  On the ±1 rows alone the gate promotes the candidates whose mean
    absolute error is smaller, and none whose error is larger: not one that moves −1'd scores
    outward (more of them land within the tolerance, yet the error grows), not one that runs
    past the middle, not one that only adds noise."""
    from app.learning.dataset import Item
    from app.learning.gate import Evaluation, judge

    kind, rng = Rating(), random.Random(3)
    truths = [min(1.0, max(0.0, rng.gauss(0.5, 0.2))) for _ in range(300)]
    shown = [min(1.0, max(0.0, t + rng.gauss(0.0, 0.25))) for t in truths]
    rows = [Item(f"t{i}", s, 1 if abs(t - s) <= TOLERANCE else -1, source="feedback")
            for i, (t, s) in enumerate(zip(truths, shown))]
    toward_middle = [1.0 if s <= 0.5 else -1.0 for s in shown]

    def moved(by: Callable[[Item, float, float], float]) -> list[float]:
        return [min(1.0, max(0.0, s + by(it, t, m))) for it, s, t, m in zip(rows, shown, truths, toward_middle)]

    def evaluation(pred: list[float]) -> Evaluation:
        return Evaluation(pred, kind.gate_metrics(rows, pred, ["-4", "4"]),
                          [kind.confidence(it, None, p) for it, p in zip(rows, pred)])

    def mae(pred: list[float]) -> float:  # what the gate cannot see
        return sum(abs(p - t) for p, t in zip(pred, truths)) / len(truths)

    def refuted(it: Item) -> bool:
        return it.signal < 0

    better = {
        "halfway to the truth": moved(lambda it, t, m: 0.5 * (t - it.label)),
        "refuted scores a tolerance inward": moved(lambda it, t, m: TOLERANCE * m if refuted(it) else 0.0),
        "every score shrunk toward the middle": moved(lambda it, t, m: 0.3 * (0.5 - it.label)),
    }
    worse = {
        "every score outward": moved(lambda it, t, m: -1.5 * TOLERANCE * m),
        "refuted scores outward": moved(lambda it, t, m: -TOLERANCE * m if refuted(it) else 0.0),
        "refuted scores past the middle": moved(lambda it, t, m: 0.5 * m if refuted(it) else 0.0),
        "noise": moved(lambda it, t, m: rng.gauss(0.0, 0.05)),
    }
    active = evaluation(shown)
    for name, pred in better.items():
        assert mae(pred) < mae(shown), name
        verdict = judge(kind, rows, evaluation(pred), active, min_rows=30)
        assert verdict.promote and verdict.comparison.mean_est > 0, (name, verdict.reason)
    for name, pred in worse.items():
        assert mae(pred) > mae(shown), name
        verdict = judge(kind, rows, evaluation(pred), active, min_rows=30)
        assert not verdict.promote, (name, verdict.reason)
    outward = worse["refuted scores outward"]
    def within(pred: list[float]) -> int:
        return sum(abs(p - t) <= TOLERANCE for p, t in zip(pred, truths))

    assert within(outward) > within(shown)  # a count of right answers would have promoted it
