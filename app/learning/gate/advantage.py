"""Per row, the candidate's advantage d = right(candidate) − right(active), and how much each row
weighs.  An outcome the row cannot tell (a changed −1'd answer) is only bounded — 0 or 1 — and
estimated by the model's calibrated confidence; a signal from a client that flips is read
through its flips (the unbiased estimator), so noise is not charged to the model."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from app.kinds.base import TaskKind
from app.learning.dataset import Item
from app.learning.gate.evaluation import Evaluation

MAX_FLIP = 0.45  # the unbiased reading of a noisy signal divides by 1 − 2ρ: nearer ½ it says next to nothing


def calibration(kind: TaskKind, items: Sequence[Item], predicted: Sequence[Any],
                confidence: Sequence[float]) -> float:
    """How far to trust a model's confidence: its accuracy over its mean confidence on the rows
    whose outcome is known, at most 1 (an over-confident model is scaled down, an under-confident
    one is not scaled up); 0 with no known row.  A row from a client that flips, whose outcome
    is known whichever way its signal went, counts by the unbiased reading of it (as in
    `advantage_rows`), so noise does not pass for the model's own mistakes, and every noisy row
    weighs as `informative` says."""
    hits = total = 0.0
    for it, p, c in zip(items, predicted, confidence):
        o = kind.outcome(it, p)
        if o is None:
            continue
        w = informative(it)
        if it.signal != 0 and it.flip > 0:
            other = kind.outcome(replace(it, signal=-it.signal), p)
            if other is not None:
                rho = min(it.flip, MAX_FLIP)
                o = ((1.0 - rho) * o - rho * other) / (1.0 - 2.0 * rho)
        hits, total = hits + w * o, total + w * c
    return min(1.0, max(0.0, hits / total)) if total > 0 else 0.0


def informative(item: Item) -> float:
    """(1 − 2ρ)² for a signal from a client that flips with ρ, else 1: the inverse of the variance
    its unbiased reading adds, so a client answering at random (ρ = ½) weighs nothing (the
    unbiased training loss weighs its rows the same way)."""
    return (1.0 - 2.0 * min(item.flip, 0.5)) ** 2 if item.signal != 0 else 1.0


def row_weight(item: Item) -> float:
    """A row's weight in the comparison: its training weight, times how informative it is."""
    return item.weight * informative(item)


def advantage_rows(kind: TaskKind, items: Sequence[Item], candidate: Evaluation, active: Evaluation
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: (d_lo, d_hi, d_est, known) for d = right(candidate) − right(active).  An unknown
    outcome is 0 or 1 in the bounds, and the model's calibrated confidence in the estimate (the
    pessimistic value when the model gave no confidence).

    A signal from a client that flips (Item.flip = ρ > 0) is read through its flips: with v(s) the
    row's estimate had the signal been s, the estimate is ((1 − ρ)·v(s) − ρ·v(−s)) / (1 − 2ρ),
    whose expectation over the flips is the advantage on the true signal (Natarajan et al. 2013's
    unbiased estimator, applied to the outcome rather than to a loss).  No prior on whether the
    shown answer was right enters, so it favours neither model; the price is variance, which
    the bootstrap sees.  The bounds stay those of the signals as given."""
    n = len(items)
    lo, hi, est, known = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)

    def scale(ev: Evaluation) -> float:
        if ev.confidence is None or not kind.calibrate_confidence:  # a prior over what the rows allow
            return 1.0
        return calibration(kind, items, ev.predicted, ev.confidence)

    cand_s, act_s = scale(candidate), scale(active)

    def value(item: Item, predicted: Any, conf: float | None, s: float, pessimistic: float) -> float:
        o = kind.outcome(item, predicted)
        return o if o is not None else (s * conf if conf is not None else pessimistic)

    def listed(values: list[Any] | None, i: int) -> Any:
        return None if values is None else values[i]

    for i, (it, c, a) in enumerate(zip(items, candidate.predicted, active.predicted)):
        if c == a:
            known[i] = True  # same answer, same outcome: a tie whatever the truth
            continue
        oc, oa = kind.outcome(it, c), kind.outcome(it, a)
        lo[i] = (oc if oc is not None else 0.0) - (oa if oa is not None else 1.0)
        hi[i] = (oc if oc is not None else 1.0) - (oa if oa is not None else 0.0)
        known[i] = oc is not None and oa is not None
        est[i] = (value(it, c, listed(candidate.confidence, i), cand_s, 0.0)
                  - value(it, a, listed(active.confidence, i), act_s, 1.0))
        if it.signal != 0 and it.flip > 0:
            rho = min(it.flip, MAX_FLIP)
            opposite = replace(it, signal=-it.signal)
            other = (value(opposite, c, listed(candidate.flipped, i), cand_s, 0.0)
                     - value(opposite, a, listed(active.flipped, i), act_s, 1.0))
            est[i] = ((1.0 - rho) * est[i] - rho * other) / (1.0 - 2.0 * rho)
    return lo, hi, est, known
