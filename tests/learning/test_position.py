"""The position-based click model on simulated traffic: naive clicks favour what was shown at the
top, clicks weighted by clipped inverse examination recover the true relevance order, and the
examination curve can be estimated from randomised orders."""

from __future__ import annotations

import pytest
import torch

from app.learning.exploration import sample_plackett_luce
from app.learning.position import default_examination, estimate_examination, ips_listwise_loss, ips_weights

RELEVANCE = torch.tensor([0.15, 0.25, 0.35, 0.45, 0.55, 0.65], dtype=torch.float64)  # item 5 best
EXAMINATION = default_examination(6, eta=1.0)  # 1, 1/2, …, 1/6


def _simulate(logging_scores: torch.Tensor, lists: int, temperature: float, seed: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of all six items ordered by Plackett–Luce on the logging scores, clicked by the PBM."""
    g = torch.Generator().manual_seed(seed)
    shown = sample_plackett_luce(logging_scores.expand(lists, 6), 6, temperature=temperature, generator=g)
    items = shown.orders  # (N, 6)
    p_click = EXAMINATION[None, :] * RELEVANCE[items]  # (N, 6)
    clicks = (torch.rand(p_click.shape, generator=g, dtype=torch.float64) < p_click).double()
    return items, clicks


def _per_item(items: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Σ values / shows for each item."""
    total = torch.bincount(items.reshape(-1), weights=values.reshape(-1), minlength=6)
    return total / torch.bincount(items.reshape(-1), minlength=6)


def _fit_scores(items: torch.Tensor, clicks: torch.Tensor, examination: torch.Tensor) -> torch.Tensor:
    """One free score per item, fitted by the listwise loss on the logged lists."""
    s = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([s], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        ips_listwise_loss(s[items], clicks, examination, max_weight=10.0).mean().backward()
        opt.step()
    return s.detach()


def test_default_examination_falls_with_position() -> None:
    assert default_examination(3, eta=1.0).tolist() == pytest.approx([1.0, 0.5, 1 / 3])
    assert default_examination(3, eta=0.0).tolist() == [1.0, 1.0, 1.0]


def test_naive_clicks_are_biased_to_the_top_and_ips_recovers_the_relevance_order() -> None:
    # the logging policy shows the least relevant items first
    items, clicks = _simulate(torch.arange(6, 0, -1, dtype=torch.float64), 20_000, 0.7, seed=0)
    naive = _per_item(items, clicks)
    corrected = _per_item(items, ips_weights(clicks, EXAMINATION, max_weight=10.0))
    assert naive[0] > naive[5]  # the worst item looks better than the best: it sat at the top
    assert torch.equal(corrected.argsort(), torch.arange(6))
    assert corrected.tolist() == pytest.approx(RELEVANCE.tolist(), abs=0.03)  # unbiased: γ itself

    naive_scores = _fit_scores(items, clicks, torch.ones(6, dtype=torch.float64))
    ips_scores = _fit_scores(items, clicks, EXAMINATION)
    assert naive_scores[0] > naive_scores[5]
    assert torch.equal(ips_scores.argsort(), torch.arange(6))


def test_examination_is_estimated_from_randomised_orders() -> None:
    items, clicks = _simulate(torch.zeros(6, dtype=torch.float64), 20_000, 1.0, seed=1)  # uniform orders
    estimated = estimate_examination(items, clicks)
    assert estimated.tolist() == pytest.approx(EXAMINATION.tolist(), abs=0.05)


def test_a_position_never_clicked_gets_the_minimum() -> None:
    items = torch.tensor([[0, 1], [1, 0]])
    clicks = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert estimate_examination(items, clicks, minimum=0.01).tolist() == pytest.approx([1.0, 0.01])


def test_clipping_bounds_the_weights() -> None:
    clicks = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    examination = torch.tensor([1.0, 0.5, 0.05, 0.001])
    weights = ips_weights(clicks, examination, max_weight=5.0)
    assert weights.tolist() == [[1.0, 0.0, 5.0, 5.0]]
    assert ips_listwise_loss(torch.zeros(1, 4), torch.zeros(1, 4), examination, max_weight=5.0).item() == 0.0
    with pytest.raises(ValueError):
        ips_weights(clicks, examination, max_weight=0.5)
