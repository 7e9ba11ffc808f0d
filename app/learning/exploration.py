"""Exploration over orders: which k of n candidate items to show, in which order, and the exact
probability of the order that was shown, so that every later estimate (position-bias correction,
off-policy gate) can divide by it.

Two policies, both batched (one row per list shown) and deterministic for a given
`torch.Generator`:

  Plackett–Luce  items placed one at a time, each drawn from the softmax (at a temperature) over
                 the items not yet placed.  Sampled in one shot by the Gumbel top-k trick: add
                 independent Gumbel noise to scores / temperature and keep the k largest.
                 P(order) = Π_j exp(s_{o_j}/τ) / Σ_{i not in o_1..o_{j-1}} exp(s_i/τ).
  ε-greedy       with probability ε a uniformly random order of k of the n items, otherwise the
                 greedy one (the k highest scores, highest first; ties as `torch.topk` breaks
                 them).  P(order) = ε / (n!/(n−k)!) + (1−ε)·[order is the greedy one].

Shapes: scores (B, n) float; orders (B, k) long, item indices into the n candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shown:
    """Orders shown and the log-probability of each, under the policy that drew it."""

    orders: torch.Tensor  # (B, k) long
    log_probs: torch.Tensor  # (B,) float


def _check(scores: torch.Tensor, k: int) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be (lists, candidates), got shape {tuple(scores.shape)}")
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be between 1 and the {scores.shape[1]} candidates, got {k}")


def plackett_luce_log_prob(scores: torch.Tensor, orders: torch.Tensor, temperature: float) -> torch.Tensor:
    """log P(orders) under Plackett–Luce over scores / temperature: the sum over positions of the
    log-softmax of the placed item among the items not yet placed.  (B, n), (B, k) → (B,)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = scores / temperature  # (B, n)
    placed = torch.zeros_like(logits, dtype=torch.bool)  # (B, n)
    log_prob = logits.new_zeros(logits.shape[0])  # (B,)
    for j in range(orders.shape[1]):
        item = orders[:, j : j + 1]  # (B, 1)
        log_denominator = torch.logsumexp(logits.masked_fill(placed, float("-inf")), dim=1)  # (B,)
        log_prob = log_prob + logits.gather(1, item).squeeze(1) - log_denominator
        placed = placed.scatter(1, item, True)
    return log_prob


def sample_plackett_luce(scores: torch.Tensor, k: int, *, temperature: float,
                         generator: torch.Generator) -> Shown:
    """k items per row drawn by Plackett–Luce (Gumbel top-k), with the log-probability of each
    drawn order.  A higher temperature explores more; as it falls to 0 the order becomes greedy."""
    _check(scores, k)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    uniform = torch.rand(scores.shape, generator=generator, dtype=scores.dtype, device=scores.device)
    gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20)))  # (B, n) standard Gumbel
    orders = torch.topk(scores / temperature + gumbel, k, dim=1).indices  # (B, k)
    return Shown(orders, plackett_luce_log_prob(scores, orders, temperature))


def greedy_orders(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k highest-scoring items of each row, highest first.  (B, n) → (B, k)."""
    _check(scores, k)
    return torch.topk(scores, k, dim=1).indices


def epsilon_greedy_log_prob(scores: torch.Tensor, orders: torch.Tensor, epsilon: float) -> torch.Tensor:
    """log P(orders) under ε-greedy: ε times the uniform probability of one order of k of n,
    plus (1−ε) where the order is the greedy one; −inf for a non-greedy order at ε = 0.
    (B, n), (B, k) → (B,)."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    n, k = scores.shape[1], orders.shape[1]
    uniform = 1.0 / math.perm(n, k)  # each ordered choice of k of n equally likely
    is_greedy = (orders == greedy_orders(scores, k)).all(dim=1)  # (B,)
    prob = epsilon * uniform + (1.0 - epsilon) * is_greedy.to(scores.dtype)
    return torch.log(prob)


def sample_epsilon_greedy(scores: torch.Tensor, k: int, *, epsilon: float,
                          generator: torch.Generator) -> Shown:
    """k items per row: with probability ε a uniformly random order (the first k of a random
    permutation), otherwise the greedy order; with the log-probability of each shown order under
    the mixture (a random order can coincide with the greedy one, which the probability counts)."""
    _check(scores, k)
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    lists = scores.shape[0]
    explore = torch.rand(lists, generator=generator, device=scores.device) < epsilon  # (B,)
    noise = torch.rand(scores.shape, generator=generator, device=scores.device)
    random_orders = torch.topk(noise, k, dim=1).indices  # (B, k) a uniform ordered choice of k
    orders = torch.where(explore[:, None], random_orders, greedy_orders(scores, k))
    return Shown(orders, epsilon_greedy_log_prob(scores, orders, epsilon))


def epsilon_greedy_slot_probs(scores: torch.Tensor, k: int, epsilon: float) -> torch.Tensor:
    """P(item i is shown at slot j) under ε-greedy, exactly: a uniform order puts every item at
    every slot with probability 1/n, so ε/n + (1−ε)·[i is the greedy order's j-th item].
    (B, n) → (B, k, n); the per-slot propensities the off-policy estimates divide by."""
    _check(scores, k)
    n = scores.shape[1]
    greedy = torch.nn.functional.one_hot(greedy_orders(scores, k), n).to(scores.dtype)  # (B, k, n)
    return epsilon / n + (1.0 - epsilon) * greedy
