"""The combined loss  L = λ·L_data + (1−λ)·L_feedback,  as plain functions on tensors.

The per-row terms are the task kind's (`TaskKind.data_losses`, `TaskKind.feedback_losses`;
classification's are in `app/kinds/classification.py`); here they are weighted and mixed.
Shapes: outputs (N, …); targets / shown (N, …); signals (N,) in {+1, −1}; weights (N,) float,
or None for all ones.  Every term is a weighted mean over its rows, and a term with no rows (or
a zero coefficient) contributes exactly 0, never NaN.
"""

from __future__ import annotations

import torch

from app.kinds.base import TaskKind


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Σ w·v / Σ w; an empty input (or all-zero weights) gives 0, not 0/0."""
    if values.numel() == 0:
        return values.new_zeros(())
    if weights is None:
        return values.mean()
    total = weights.sum()
    return (values * weights).sum() / total.clamp(min=torch.finfo(values.dtype).tiny)


def combined_loss(
    kind: TaskKind,
    outputs_data: torch.Tensor,
    targets: torch.Tensor,
    outputs_fb: torch.Tensor,
    shown: torch.Tensor,
    signals: torch.Tensor,
    lam: float,
    variant: str = "bounded",
    data_weights: torch.Tensor | None = None,
    feedback_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """λ·L_data + (1−λ)·L_feedback for one batch.  A missing term (no rows, or λ ∈ {0, 1} switching
    it off) is left out entirely, so it adds exactly 0 and cannot turn the sum into NaN."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    total = outputs_data.new_zeros((), dtype=torch.float32)
    if lam > 0 and outputs_data.shape[0] > 0:
        total = total + lam * weighted_mean(kind.data_losses(outputs_data, targets), data_weights)
    if lam < 1 and outputs_fb.shape[0] > 0:
        fb = kind.feedback_losses(outputs_fb, shown, signals, variant)
        total = total + (1.0 - lam) * weighted_mean(fb, feedback_weights)
    return total
