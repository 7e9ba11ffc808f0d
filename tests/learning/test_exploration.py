"""Exploration over orders: the logged probabilities are exact (they sum to 1 over every order and
match sampling frequencies), and the samplers are deterministic for a generator."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch

from app.learning.exploration import (
    epsilon_greedy_log_prob,
    epsilon_greedy_slot_probs,
    greedy_orders,
    plackett_luce_log_prob,
    sample_epsilon_greedy,
    sample_plackett_luce,
)

SCORES = torch.tensor([[1.5, 0.2, -0.7]])


def _all_orders(n: int, k: int) -> torch.Tensor:
    return torch.tensor(list(itertools.permutations(range(n), k)))


@pytest.mark.parametrize("k", [3, 2, 1])
def test_plackett_luce_probabilities_of_all_orders_sum_to_one(k: int) -> None:
    orders = _all_orders(3, k)
    log_probs = plackett_luce_log_prob(SCORES.expand(len(orders), 3), orders, temperature=0.7)
    assert log_probs.exp().sum().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("k", [3, 2])
def test_epsilon_greedy_probabilities_of_all_orders_sum_to_one(k: int) -> None:
    orders = _all_orders(3, k)
    probs = epsilon_greedy_log_prob(SCORES.expand(len(orders), 3), orders, epsilon=0.3).exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    greedy = (orders == torch.tensor([0, 1, 2][:k])).all(dim=1)
    assert probs[greedy].item() == pytest.approx(0.7 + 0.3 / len(orders))


def _frequencies_match(orders: torch.Tensor, log_probs: torch.Tensor, tolerance: float) -> None:
    counts = Counter(tuple(o) for o in orders.tolist())
    logged = {tuple(o): p for o, p in zip(orders.tolist(), log_probs.exp().tolist())}
    assert sum(logged.values()) > 0
    for order, count in counts.items():
        assert count / len(orders) == pytest.approx(logged[order], abs=tolerance), order


def test_plackett_luce_sampling_frequencies_match_the_logged_probabilities() -> None:
    shown = sample_plackett_luce(SCORES.expand(20_000, 3), 3, temperature=1.0,
                                 generator=torch.Generator().manual_seed(0))
    _frequencies_match(shown.orders, shown.log_probs, tolerance=0.01)
    assert len({tuple(o) for o in shown.orders.tolist()}) == 6  # every order is reachable


def test_epsilon_greedy_sampling_frequencies_match_the_logged_probabilities() -> None:
    shown = sample_epsilon_greedy(SCORES.expand(20_000, 3), 2, epsilon=0.4,
                                  generator=torch.Generator().manual_seed(0))
    _frequencies_match(shown.orders, shown.log_probs, tolerance=0.01)


def test_samplers_are_deterministic_for_a_generator() -> None:
    scores = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    for sample in (lambda g: sample_plackett_luce(scores, 4, temperature=0.5, generator=g),
                   lambda g: sample_epsilon_greedy(scores, 4, epsilon=0.5, generator=g)):
        a, b = sample(torch.Generator().manual_seed(7)), sample(torch.Generator().manual_seed(7))
        assert torch.equal(a.orders, b.orders) and torch.equal(a.log_probs, b.log_probs)


def test_epsilon_zero_shows_the_greedy_order_with_probability_one() -> None:
    scores = torch.randn(100, 6, generator=torch.Generator().manual_seed(2))
    shown = sample_epsilon_greedy(scores, 3, epsilon=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shown.orders, greedy_orders(scores, 3))
    assert torch.all(shown.log_probs == 0.0)
    other = shown.orders.flip(1)
    assert torch.all(epsilon_greedy_log_prob(scores, other, epsilon=0.0) == -math.inf)


def test_cold_plackett_luce_is_nearly_greedy() -> None:
    scores = torch.randn(100, 6, generator=torch.Generator().manual_seed(3))
    shown = sample_plackett_luce(scores, 3, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shown.orders, greedy_orders(scores, 3))


def test_epsilon_greedy_slot_probabilities_are_the_sampled_marginals() -> None:
    scores = SCORES.expand(20_000, 3)
    shown = sample_epsilon_greedy(scores, 2, epsilon=0.4, generator=torch.Generator().manual_seed(5))
    probs = epsilon_greedy_slot_probs(SCORES, 2, epsilon=0.4)[0]  # (k, n)
    assert probs.sum(dim=1).tolist() == pytest.approx([1.0, 1.0])
    for slot in range(2):
        freq = torch.bincount(shown.orders[:, slot], minlength=3).float() / len(scores)
        assert freq.tolist() == pytest.approx(probs[slot].tolist(), abs=0.01)


def test_bad_arguments_are_refused() -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError):
        sample_plackett_luce(SCORES, 4, temperature=1.0, generator=g)
    with pytest.raises(ValueError):
        sample_plackett_luce(SCORES, 2, temperature=0.0, generator=g)
    with pytest.raises(ValueError):
        sample_epsilon_greedy(SCORES, 2, epsilon=1.5, generator=g)
