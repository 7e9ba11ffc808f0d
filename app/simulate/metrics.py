"""Accuracy and macro-F1 of predicted labels against gold labels."""

from __future__ import annotations

from typing import Sequence


def accuracy(gold: Sequence[str], pred: Sequence[str]) -> float:
    if len(gold) != len(pred) or not gold:
        raise ValueError(f"need equal, non-empty sequences, got {len(gold)} gold and {len(pred)} predicted")
    return sum(g == p for g, p in zip(gold, pred)) / len(gold)


def macro_f1(gold: Sequence[str], pred: Sequence[str]) -> float:
    """Mean F1 over the classes that occur in gold or predictions (as scikit-learn does)."""
    if len(gold) != len(pred) or not gold:
        raise ValueError(f"need equal, non-empty sequences, got {len(gold)} gold and {len(pred)} predicted")
    scores = []
    for c in sorted(set(gold) | set(pred)):
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        support = sum(g == c for g in gold)
        predicted = sum(p == c for p in pred)
        scores.append(2 * tp / (support + predicted))
    return sum(scores) / len(scores)
