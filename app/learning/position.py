"""The position-based click model (PBM) and learning through it.

A shown item is clicked when it is examined and relevant, independently:
    P(click | item i at position p) = θ_p · γ_i,
θ_p the examination probability of position p (0 = top), γ_i the item's relevance.  Naive click
rates mix the two, so items that were shown near the top look better than they are.  Dividing a
click by θ_p (inverse propensity scoring) removes that: E[click / θ_p] = γ_i wherever the item was
shown.  The division is clipped at a maximum weight, trading a little bias at the bottom positions
for bounded variance.

Shapes: items (N, k) long, the shown lists' item ids by position; clicks (N, k) in {0, 1};
examination (k,) float, position 0 first; scores (N, k) float, the model's scores of the shown items.
"""

from __future__ import annotations

import torch


def default_examination(positions: int, eta: float = 1.0) -> torch.Tensor:
    """θ_p = 1 / (1 + p)^η for p = 0 … positions−1: the top is always examined, and η sets how
    fast attention falls (η = 1 is the usual prior before any randomised data exists).  → (k,)."""
    if positions < 1 or eta < 0:
        raise ValueError(f"need positions >= 1 and eta >= 0, got {positions}, {eta}")
    return 1.0 / (1.0 + torch.arange(positions, dtype=torch.float64)) ** eta


def estimate_examination(items: torch.Tensor, clicks: torch.Tensor, *, minimum: float = 1e-3) -> torch.Tensor:
    """θ_p / θ_0 from logged lists whose orders were randomised, by the same items at different
    positions (intervention harvesting): under the PBM an item's click rate at p is θ_p·γ_i, so
    for items shown both at p and at the top,
        θ_p / θ_0 = Σ_i w_i · rate(i, p) / Σ_i w_i · rate(i, 0),   w_i = min(shows(i, p), shows(i, 0)),
    where the common γ_i cancels; the weight favours items with many shows at both positions.
    A position with no such items or no clicks is given `minimum`.  (N, k), (N, k) → (k,)."""
    k = items.shape[1]
    n_items = int(items.max().item()) + 1
    position = torch.arange(k).expand_as(items)  # (N, k)
    cell = (items * k + position).reshape(-1)  # one cell per (item, position)
    shows = torch.bincount(cell, minlength=n_items * k).reshape(n_items, k).double()  # (items, k)
    clicked = torch.bincount(cell, weights=clicks.reshape(-1).double(), minlength=n_items * k)
    rate = clicked.reshape(n_items, k) / shows.clamp(min=1)  # (items, k)
    weight = torch.minimum(shows, shows[:, :1])  # (items, k): zero unless shown at p and at the top
    top = (weight * rate[:, :1]).sum(dim=0)  # (k,)
    ratio = (weight * rate).sum(dim=0) / top.clamp(min=1e-12)
    return torch.where((top > 0) & (ratio > 0), ratio, torch.full_like(ratio, minimum))


def ips_weights(clicks: torch.Tensor, examination: torch.Tensor, *, max_weight: float) -> torch.Tensor:
    """Each click's inverse examination probability, min(1/θ_p, max_weight); 0 where nothing was
    clicked.  (N, k), (k,) → (N, k), every weight in [0, max_weight]."""
    if max_weight < 1:
        raise ValueError(f"max_weight must be at least 1 (the top is examined), got {max_weight}")
    inverse = (1.0 / examination).clamp(max=max_weight)  # (k,)
    return clicks.to(inverse.dtype) * inverse


def ips_listwise_loss(scores: torch.Tensor, clicks: torch.Tensor, examination: torch.Tensor, *,
                      max_weight: float) -> torch.Tensor:
    """Softmax cross-entropy over each shown list with every clicked item weighted by its clipped
    1/θ_p: −Σ_j w_j · log softmax(scores)_j.  Its expectation over the clicks is the same loss with
    each item's relevance γ_i in place of the weight, wherever the item was shown — so the scores
    learn the relevance order, not the position order.  A row without clicks costs 0.
    (N, k), (N, k), (k,) → (N,) per-row losses, for the caller to weight and mix."""
    weights = ips_weights(clicks, examination, max_weight=max_weight).to(scores.dtype)  # (N, k)
    return -(weights * torch.log_softmax(scores, dim=1)).sum(dim=1)
