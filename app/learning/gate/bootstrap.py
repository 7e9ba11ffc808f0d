"""The paired comparison by bootstrap over rows: how much better (or worse) the candidate is on
the same rows, with one-sided confidence bounds.  Rows are resampled with their weights, so one
client's cap holds here as in training; `bootstrap_bounds` is the one resampling loop, used for
the mean per-row advantage (`compare`) and for a ratio metric such as entity F1 (`compare_ratio`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from app.kinds.base import TaskKind
from app.learning.dataset import Item
from app.learning.gate.advantage import advantage_rows, row_weight
from app.learning.gate.evaluation import Evaluation

EPS = 1e-9
BOOTSTRAP_SAMPLES = 2000


@dataclass
class Comparison:
    """Candidate − active on the same rows: bounds on the mean advantage and their confidence bounds."""

    rows: int
    known: int  # rows whose advantage is known exactly (both outcomes known, or the same answer)
    mean_lo: float  # pessimistic: unknowns against the candidate
    mean_hi: float  # optimistic: unknowns for the candidate
    mean_est: float  # unknowns estimated (each model's calibrated confidence), the decision's statistic
    lower: float  # one-sided lower confidence bound of mean_est
    upper: float  # one-sided upper confidence bound of mean_est
    confidence: float

    def to_json(self) -> dict[str, Any]:
        return {"method": "paired bootstrap over validation rows, one-sided; unknown outcomes estimated by "
                          "each model's confidence, calibrated on the rows whose outcome is known",
                "rows": self.rows, "known_rows": self.known, "unknown_rows": self.rows - self.known,
                "advantage_pessimistic": self.mean_lo, "advantage_optimistic": self.mean_hi,
                "advantage_estimate": self.mean_est, "lower_bound": self.lower, "upper_bound": self.upper,
                "confidence": self.confidence}


def bootstrap_bounds(statistic: Callable[[np.ndarray], np.ndarray], n: int, *, confidence: float, samples: int,
                     seed: int, max_indices: int) -> tuple[float, float]:
    """One-sided (lower, upper) confidence bounds of a statistic over `n` rows, from `samples`
    resamples of the rows with replacement.  `statistic` takes an index array of shape
    (resamples, n) and returns one value per resample; the resamples are drawn in chunks of at
    most about `max_indices` indices, so memory stays flat however many rows there are."""
    rng = np.random.default_rng(seed)
    values: list[np.ndarray] = []
    chunk = max(1, max_indices // n)
    for start in range(0, samples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, samples - start), n))
        values.append(statistic(idx))
    boot = np.concatenate(values)
    return float(np.quantile(boot, 1.0 - confidence)), float(np.quantile(boot, confidence))


def compare(kind: TaskKind, items: Sequence[Item], candidate: Evaluation, active: Evaluation, *,
            confidence: float, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Comparison:
    """The paired comparison of two models' answers on the same rows."""
    lo, hi, est, known = advantage_rows(kind, items, candidate, active)
    w = np.array([row_weight(it) for it in items], dtype=float)
    n = len(items)
    if n == 0 or w.sum() <= 0:
        return Comparison(n, int(known.sum()), 0.0, 0.0, 0.0, -1.0, 1.0, confidence)

    def weighted_mean(idx: np.ndarray) -> np.ndarray:
        ws = w[idx]
        return (ws * est[idx]).sum(axis=1) / ws.sum(axis=1).clip(min=EPS)

    # at most ~2M indices in memory at once
    lower, upper = bootstrap_bounds(weighted_mean, n, confidence=confidence, samples=samples, seed=seed,
                                    max_indices=2_000_000)
    total = w.sum()
    return Comparison(
        rows=n, known=int(known.sum()),
        mean_lo=float((w * lo).sum() / total), mean_hi=float((w * hi).sum() / total),
        mean_est=float((w * est).sum() / total),
        lower=lower, upper=upper, confidence=confidence,
    )


def _known_terms(kind: TaskKind, item: Item, predicted: Any) -> tuple[float, float]:
    """`ratio_terms` of a row whose truth is known (the only rows `compare_ratio` is given)."""
    terms = kind.ratio_terms(item, predicted)
    if terms is None:
        raise TypeError(f"compare_ratio needs rows whose truth is known; {kind.name} knows none for this one")
    return terms


def compare_ratio(kind: TaskKind, items: Sequence[Item], candidate: Evaluation, active: Evaluation, *,
                  confidence: float, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Comparison:
    """The paired comparison of a ratio metric (`TaskKind.ratio_terms`, e.g. entity F1) on rows
    whose truth is known: the difference Σnum/Σden (candidate) − Σnum/Σden (active), bootstrapped
    over rows (weighted as in training).  Every row is known; a ratio with nothing to find and
    nothing found counts as perfect."""
    n = len(items)
    terms = np.array([[*_known_terms(kind, it, c), *_known_terms(kind, it, a)]
                      for it, c, a in zip(items, candidate.predicted, active.predicted)], dtype=float).reshape(n, 4)
    w = np.array([it.weight for it in items], dtype=float)

    def diff(ws: np.ndarray, t: np.ndarray) -> np.ndarray:
        sums = (ws[..., None] * t).sum(axis=-2)
        ratio = lambda num, den: np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)  # noqa: E731
        return ratio(sums[..., 0], sums[..., 1]) - ratio(sums[..., 2], sums[..., 3])

    if n == 0 or w.sum() <= 0:
        return Comparison(n, n, 0.0, 0.0, 0.0, -1.0, 1.0, confidence)
    # four terms a row: at most ~500k indices (~2M terms) in memory at once
    lower, upper = bootstrap_bounds(lambda idx: diff(w[idx], terms[idx]), n, confidence=confidence,
                                    samples=samples, seed=seed, max_indices=500_000)
    est = float(diff(w, terms))
    return Comparison(rows=n, known=n, mean_lo=est, mean_hi=est, mean_est=est,
                      lower=lower, upper=upper, confidence=confidence)
