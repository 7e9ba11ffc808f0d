"""The combined loss  L = λ·L_data + (1−λ)·L_feedback,  as plain functions on tensors.

The per-row terms are the task kind's (`KindModel.data_losses`, `KindModel.feedback_losses`;
each in its kind's module under `app/kinds/`); here they are weighted and mixed.
Shapes: outputs (N, …); targets / shown (N, …); signals (N,) in {+1, −1}; weights (N,) float,
or None for all ones; flips (N,) each row's client's flip rate ρ (`app/learning/noise.py`), or
None for all 0.  Every term is a weighted mean over its rows, and a term with no rows (or a zero
coefficient) contributes exactly 0, never NaN.

Noisy feedback.  A ±1 is an observation of one binary fact, "the shown answer was right", made
through a channel that flips it with probability ρ.  Two variants learn through that channel
rather than around it, from the kind's log P(shown right) (`KindModel.right_log_probs`):

  corrected  forward correction (Patrini et al. 2017, for this binary fact): the model's
             probability of *observing* the signal, q = (1 − ρ)·p + ρ·(1 − p) for a +1 (and 1 − q
             for a −1), and the loss −log of it.  At ρ = 0 it is the bounded loss exactly; as ρ
             grows its gradient shrinks and stays bounded (q ≥ ρ), so a flipped signal on an
             answer the model is sure of cannot pull hard; at ρ = ½ the signal teaches nothing.
  unbiased   the unbiased estimator of Natarajan et al. 2013:
             ((1 − ρ)·ℓ(s) − ρ·ℓ(−s)) / (1 − 2ρ), ℓ(+1) = −log p, ℓ(−1) = −log(1 − p), whose
             expectation over the flips is the clean loss, each row weighted by (1 − 2ρ)² (the
             inverse of the variance the division adds), so a client at ρ = ½ weighs nothing.
             It is unbounded below.
A kind without `right_log_probs` (one whose answer is a set of spans) trains its bounded loss with each row weighted by
1 − 2ρ, the share of its signal that survives the flips.
"""

from __future__ import annotations

import torch

from app.kinds.base import KindModel


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Σ w·v / Σ w; an empty input (or all-zero weights) gives 0, not 0/0."""
    if values.numel() == 0:
        return values.new_zeros(())
    if weights is None:
        return values.mean()
    total = weights.sum()
    return (values * weights).sum() / total.clamp(min=torch.finfo(values.dtype).tiny)


NOISY_VARIANTS = ("corrected", "unbiased")


def feedback_term(kind: KindModel, outputs: torch.Tensor, shown: torch.Tensor, signals: torch.Tensor,
                  variant: str, flips: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row feedback loss: the kind's own variants, or one of the noise-aware ones above."""
    if variant not in NOISY_VARIANTS:
        return kind.feedback_losses(outputs, shown, signals, variant)
    rho = (flips if flips is not None else outputs.new_zeros(outputs.shape[0])).float().clamp(0.0, 0.5)
    logs = kind.right_log_probs(outputs, shown)
    if logs is None:
        return kind.feedback_losses(outputs, shown, signals, "bounded") * (1.0 - 2.0 * rho)
    log_p, log_not_p = logs
    pos = signals > 0
    if variant == "corrected":
        keep, flip = torch.log1p(-rho), torch.log(rho)  # log(1 − ρ), log ρ (−inf at ρ = 0: a clean signal)
        log_plus = torch.logaddexp(keep + log_p, flip + log_not_p)  # log P(observe +1)
        log_minus = torch.logaddexp(keep + log_not_p, flip + log_p)  # log P(observe −1)
        return -torch.where(pos, log_plus, log_minus)
    said, opposite = torch.where(pos, -log_p, -log_not_p), torch.where(pos, -log_not_p, -log_p)
    # Natarajan's estimate divided by 1 − 2ρ, each row weighted by (1 − 2ρ)², the inverse of how
    # much that division amplifies the noise: a client answering at random (ρ = ½) weighs nothing.
    return ((1.0 - rho) * said - rho * opposite) * (1.0 - 2.0 * rho)


def combined_loss(
    kind: KindModel,
    outputs_data: torch.Tensor,
    targets: torch.Tensor,
    outputs_fb: torch.Tensor,
    shown: torch.Tensor,
    signals: torch.Tensor,
    lam: float,
    variant: str = "bounded",
    data_weights: torch.Tensor | None = None,
    feedback_weights: torch.Tensor | None = None,
    feedback_flips: torch.Tensor | None = None,
) -> torch.Tensor:
    """λ·L_data + (1−λ)·L_feedback for one batch.  A missing term (no rows, or λ ∈ {0, 1} switching
    it off) is left out entirely, so it adds exactly 0 and cannot turn the sum into NaN."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    total = outputs_data.new_zeros((), dtype=torch.float32)
    if lam > 0 and outputs_data.shape[0] > 0:
        total = total + lam * weighted_mean(kind.data_losses(outputs_data, targets), data_weights)
    if lam < 1 and outputs_fb.shape[0] > 0:
        fb = feedback_term(kind, outputs_fb, shown, signals, variant, feedback_flips)
        total = total + (1.0 - lam) * weighted_mean(fb, feedback_weights)
    return total
