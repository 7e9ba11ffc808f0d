"""Off-policy estimates on simulated logs whose true target value is known exactly: the intervals
cover it, DR with a perfect reward model varies less than IPS, and the per-slot form works with
ε-greedy's exact slot propensities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.learning.exploration import epsilon_greedy_slot_probs, greedy_orders, sample_epsilon_greedy, sample_plackett_luce
from app.learning.offpolicy import doubly_robust, ips, snips

CANDIDATES = 5


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _top1_logs(seed: int, rows: int = 2000) -> dict[str, np.ndarray | float]:
    """Contexts with known click probabilities; the top item logged by Plackett–Luce on noisy scores;
    a sharper target policy that follows the truth more closely; a reward model off by noise."""
    rng = np.random.default_rng(seed)
    q = 1 / (1 + np.exp(-(1.5 * rng.standard_normal((rows, CANDIDATES)) - 1)))  # true P(click)
    logging_scores = np.log(q) + rng.standard_normal((rows, CANDIDATES))
    g = torch.Generator().manual_seed(seed)
    shown = sample_plackett_luce(torch.from_numpy(logging_scores), 1, temperature=1.0, generator=g)
    top = shown.orders[:, 0].numpy()  # (N,)
    r = np.arange(rows)
    pi = _softmax((np.log(q) + 0.3 * rng.standard_normal((rows, CANDIDATES))) / 0.5)  # target π (N, n)
    model = np.clip(q + 0.1 * rng.standard_normal(q.shape), 0, 1)  # an imperfect reward model
    return {"target": pi[r, top], "logging": np.exp(shown.log_probs.numpy()),
            "reward": (rng.random(rows) < q[r, top]).astype(float),
            "q_logged": q[r, top], "q_target": (pi * q).sum(axis=1),
            "model_logged": model[r, top], "model_target": (pi * model).sum(axis=1),
            "true": float((pi * q).sum(axis=1).mean())}


def test_hand_computed_estimates() -> None:
    target, logging, reward = [0.5, 0.0, 1.0], [0.25, 0.5, 0.5], [1.0, 1.0, 0.0]
    assert ips(target, logging, reward, samples=10).value == pytest.approx(2 / 3)  # weights 2, 0, 2
    assert snips(target, logging, reward, samples=10).value == pytest.approx(0.5)
    dr = doubly_robust(target, logging, reward, [0.5, 0.5, 0.5], [0.4, 0.4, 0.4], samples=10)
    assert dr.value == pytest.approx(0.4 + (2 * 0.5 + 0 + 2 * -0.5) / 3)
    with pytest.raises(ValueError):
        ips([0.5], [0.0], [1.0])


def test_on_policy_logs_give_the_mean_reward() -> None:
    reward = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    probs = np.full(5, 0.3)
    assert ips(probs, probs, reward, samples=10).value == pytest.approx(0.6)
    assert snips(probs, probs, reward, samples=10).value == pytest.approx(0.6)


def test_snips_and_dr_intervals_cover_the_true_value_in_most_seeds() -> None:
    covered = {"snips": 0, "dr": 0}
    for seed in range(20):
        logs = _top1_logs(seed)
        est = {"snips": snips(logs["target"], logs["logging"], logs["reward"], samples=400, seed=seed),
               "dr": doubly_robust(logs["target"], logs["logging"], logs["reward"], logs["model_logged"],
                                   logs["model_target"], samples=400, seed=seed)}
        for name, e in est.items():
            assert e.lower <= e.value <= e.upper
            covered[name] += e.lower <= logs["true"] <= e.upper
    assert covered["snips"] >= 16 and covered["dr"] >= 16, covered  # 95% intervals: about 19 expected


def test_doubly_robust_with_a_perfect_reward_model_varies_less_than_ips() -> None:
    errors: dict[str, list[float]] = {"ips": [], "dr": []}
    for seed in range(20):
        logs = _top1_logs(seed)
        by_ips = ips(logs["target"], logs["logging"], logs["reward"], samples=400, seed=seed)
        by_dr = doubly_robust(logs["target"], logs["logging"], logs["reward"], logs["q_logged"], logs["q_target"],
                              samples=400, seed=seed)
        assert by_dr.upper - by_dr.lower < by_ips.upper - by_ips.lower  # a narrower interval in every seed
        errors["ips"].append(by_ips.value - logs["true"])
        errors["dr"].append(by_dr.value - logs["true"])
    assert np.std(errors["dr"]) < np.std(errors["ips"]), errors  # and less spread across seeds


def test_per_slot_estimate_under_epsilon_greedy_logging() -> None:
    """Two slots, clicks by the item-position model (examination 1 and ½ times the item's click
    probability); a deterministic target shows its own greedy pair.  True value Σ_j θ_j·q(target_j)."""
    rows, examination = 20_000, np.array([1.0, 0.5])
    rng = np.random.default_rng(3)
    q = rng.uniform(0.05, 0.9, CANDIDATES)
    logging_scores = torch.from_numpy(rng.standard_normal(CANDIDATES)).expand(rows, CANDIDATES)
    shown = sample_epsilon_greedy(logging_scores, 2, epsilon=0.5, generator=torch.Generator().manual_seed(3))
    orders = shown.orders.numpy()  # (N, 2)
    slot_probs = epsilon_greedy_slot_probs(logging_scores[:1], 2, epsilon=0.5)[0].numpy()  # (2, n)
    logging = slot_probs[[0, 1], orders]  # (N, 2)
    target_order = greedy_orders(torch.from_numpy(q)[None, :], 2)[0].numpy()  # the target shows the best two
    target = (orders == target_order[None, :]).astype(float)
    reward = (rng.random((rows, 2)) < examination * q[orders]).astype(float)
    true = float((examination * q[target_order]).sum())
    for estimate in (ips(target, logging, reward, samples=400), snips(target, logging, reward, samples=400)):
        assert estimate.lower <= true <= estimate.upper, (estimate, true)
