"""The combined loss  L = λ·L_data + (1−λ)·L_feedback,  as plain functions on tensors.

Shapes: logits (N, C) float; targets / shown (N,) long class indices; signals (N,) in {+1, −1};
weights (N,) float, or None for all ones.  Every term is a weighted mean over its rows, and a
term with no rows (or a zero coefficient) contributes exactly 0, never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

VARIANTS = ("bounded", "signed", "robust")


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Σ w·v / Σ w; an empty input (or all-zero weights) gives 0, not 0/0."""
    if values.numel() == 0:
        return values.new_zeros(())
    if weights is None:
        return values.mean()
    total = weights.sum()
    return (values * weights).sum() / total.clamp(min=torch.finfo(values.dtype).tiny)


def data_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy on labelled examples and corrections.  (N, C), (N,) -> (N,)."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def log_not(logits: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
    """log(1 − p(shown)) computed as logsumexp over the other classes − logsumexp over all.

    Stable where p → 1: it stays finite as long as the logits are, unlike log1p(−softmax).
    """
    others = logits.scatter(1, shown.unsqueeze(1), float("-inf"))
    return torch.logsumexp(others, dim=1) - torch.logsumexp(logits, dim=1)


def feedback_losses(
    logits: torch.Tensor, shown: torch.Tensor, signals: torch.Tensor, variant: str = "bounded"
) -> torch.Tensor:
    """Per-row loss for a ±1 signal on the label that was shown.  (N, C), (N,), (N,) -> (N,).

    bounded: +1 -> −log p,  −1 -> −log(1 − p).  The gradient of the −1 branch fades as p -> 0.
    signed:  f·CE(shown) = −f·log p.  For −1 this is  log p, which has no lower bound: the
             optimiser can always lower it further by driving p towards 0 (kept to compare).
    robust:  +1 -> −log p,  −1 -> p.  The −1 branch is the probability still on the refuted label,
             bounded in [0, 1] (the MAE / "unhinged" complementary loss).  Its gradient on the
             shown logit is p(1 − p), which fades as p -> 1, whereas bounded's is p, its largest
             exactly there.  So a −1 that contradicts a confident answer, which is most often a
             noisy or hostile −1 once the model is mostly right, cannot outweigh the +1s.
             Symmetric losses like this one tolerate label noise (Ghosh et al., AAAI 2017;
             for complementary labels, Ishiguro et al., ICML 2022).
    """
    logits = logits.float()
    log_p = -F.cross_entropy(logits, shown, reduction="none")
    if variant == "bounded":
        return torch.where(signals > 0, -log_p, -log_not(logits, shown))
    if variant == "signed":
        return -signals.to(log_p.dtype) * log_p
    if variant == "robust":
        return torch.where(signals > 0, -log_p, log_p.exp())
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def combined_loss(
    logits_data: torch.Tensor,
    targets: torch.Tensor,
    logits_fb: torch.Tensor,
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
    total = logits_data.new_zeros((), dtype=torch.float32)
    if lam > 0 and logits_data.shape[0] > 0:
        total = total + lam * weighted_mean(data_losses(logits_data, targets), data_weights)
    if lam < 1 and logits_fb.shape[0] > 0:
        fb = feedback_losses(logits_fb, shown, signals, variant)
        total = total + (1.0 - lam) * weighted_mean(fb, feedback_weights)
    return total
