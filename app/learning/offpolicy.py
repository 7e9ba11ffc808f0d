"""Off-policy estimates of a new policy's reward (click or purchase rate) from logged lists, before it
ever serves: each logged row says which item sat in each slot, with what probability the logging
policy put it there, and what reward it earned.

The model is per slot (item-position): the reward of a slot depends only on the item placed in it
and on the slot, so each slot is estimated on its own and the list's value is the sum over slots.
The simplest use, and the one to start with, is one slot — the item at the top: then the target
and logging probabilities are those of the logged top item, e.g. softmax(scores/τ) for
Plackett–Luce (`app.learning.exploration`), `epsilon_greedy_slot_probs` for ε-greedy.

Per row i and slot j, with w = π(logged item at j) / μ(logged item at j):
  IPS    (1/N) Σ_i Σ_j w_ij · r_ij                             unbiased while μ > 0 wherever π > 0
  SNIPS  Σ_j Σ_i w_ij · r_ij / Σ_i w_ij                        biased O(1/N), far smaller variance
  DR     (1/N) Σ_i Σ_j [ q̂_ij(π) + w_ij · (r_ij − q̂_ij(logged)) ]
         q̂(π) the reward model's expected reward of the target's choice at that slot, q̂(logged) its
         prediction for the logged item: unbiased if either the propensities or the model are right,
         and with a good model the weights multiply only the model's residual.
Intervals by the paired bootstrap over rows (`app.learning.gate.bootstrap.bootstrap_bounds`), each
bound one-sided at `confidence`, as in the gate.

Shapes: target, logging, reward, predicted_logged, predicted_target — (N, S) float, or (N,) for one slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from app.learning.gate.bootstrap import BOOTSTRAP_SAMPLES, bootstrap_bounds

MAX_INDICES = 2_000_000  # resampled row indices in memory at once


@dataclass(frozen=True)
class Estimate:
    """An off-policy estimate of the target policy's reward per list, with its bootstrap bounds."""

    method: str
    value: float
    lower: float
    upper: float
    confidence: float
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "value": self.value, "lower_bound": self.lower,
                "upper_bound": self.upper, "confidence": self.confidence, "rows": self.rows}


def _slots(*arrays: np.ndarray | list[float]) -> list[np.ndarray]:
    """Each input as a float (N, S) array, (N,) read as one slot; all the same shape."""
    out = [np.asarray(a, dtype=float) for a in arrays]
    out = [a[:, None] if a.ndim == 1 else a for a in out]
    if any(a.shape != out[0].shape or a.ndim != 2 for a in out):
        raise ValueError(f"inputs must share one (rows, slots) shape, got {[a.shape for a in out]}")
    if out[0].shape[0] == 0:
        raise ValueError("no logged rows to estimate from")
    return out


def importance_weights(target: np.ndarray, logging: np.ndarray) -> np.ndarray:
    """w = π / μ for the logged item of each slot; μ must be positive (it was shown)."""
    if np.any(logging <= 0):
        raise ValueError("a logged item with logging probability 0: its propensity was not logged right")
    return np.asarray(target / logging)


def _estimate(method: str, row_values: Callable[[np.ndarray], np.ndarray], rows: int, *,
              confidence: float, samples: int, seed: int) -> Estimate:
    """`row_values(idx)` maps a (resamples, N) index array to one estimate per resample."""
    value = float(row_values(np.arange(rows)[None, :])[0])
    lower, upper = bootstrap_bounds(row_values, rows, confidence=confidence, samples=samples, seed=seed,
                                    max_indices=MAX_INDICES)
    return Estimate(method, value, lower, upper, confidence, rows)


def ips(target: np.ndarray, logging: np.ndarray, reward: np.ndarray, *, confidence: float = 0.975,
        samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Estimate:
    """Inverse propensity scoring: the mean over rows of Σ_slots w·r."""
    target, logging, reward = _slots(target, logging, reward)
    per_row = (importance_weights(target, logging) * reward).sum(axis=1)  # (N,)
    return _estimate("ips", lambda idx: per_row[idx].mean(axis=1), len(per_row),
                     confidence=confidence, samples=samples, seed=seed)


def snips(target: np.ndarray, logging: np.ndarray, reward: np.ndarray, *, confidence: float = 0.975,
          samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Estimate:
    """Self-normalised IPS: per slot Σ w·r / Σ w over rows, summed over slots."""
    target, logging, reward = _slots(target, logging, reward)
    w = importance_weights(target, logging)  # (N, S)
    wr = w * reward

    def per_resample(idx: np.ndarray) -> np.ndarray:  # idx (R, N) → (R,)
        return np.asarray((wr[idx].sum(axis=1) / np.maximum(w[idx].sum(axis=1), 1e-12)).sum(axis=-1))

    return _estimate("snips", per_resample, len(w), confidence=confidence, samples=samples, seed=seed)


def doubly_robust(target: np.ndarray, logging: np.ndarray, reward: np.ndarray, predicted_logged: np.ndarray,
                  predicted_target: np.ndarray, *, confidence: float = 0.975, samples: int = BOOTSTRAP_SAMPLES,
                  seed: int = 0) -> Estimate:
    """Doubly robust: the reward model's value of the target policy, corrected by the weighted
    residual of the logged reward: mean over rows of Σ_slots q̂(π) + w·(r − q̂(logged))."""
    target, logging, reward, predicted_logged, predicted_target = _slots(
        target, logging, reward, predicted_logged, predicted_target)
    w = importance_weights(target, logging)
    per_row = (predicted_target + w * (reward - predicted_logged)).sum(axis=1)  # (N,)
    return _estimate("doubly_robust", lambda idx: per_row[idx].mean(axis=1), len(per_row),
                     confidence=confidence, samples=samples, seed=seed)
