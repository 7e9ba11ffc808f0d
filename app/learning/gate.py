"""The validation gate: nothing is promoted on faith.

Candidate and active are scored on the same validation rows: labelled validation examples
(accuracy, macro-F1, per-class recall) and the held-out slice of feedback (agreement with +1,
disagreement with −1, accuracy on corrections).  One score is the weighted mean of the parts
present: examples' macro-F1 0.5, feedback agreement 0.25, correction accuracy 0.25, the
weights of missing parts shared out among the others.  Feedback rows carry their per-client
weights, so the cap on one client's share holds here too.

Verdict: promote only if the candidate's score is at most `tolerance` below the active's and
no class's recall on the examples falls by more than `max_recall_drop`.  With no validation
rows at all there is nothing to compare, and the candidate is rejected (say so, and wait for
labelled examples or more feedback).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from app.learning.data import Item
from app.serving.model import tokenize

SCORE_WEIGHTS = {"examples": 0.5, "feedback": 0.25, "corrections": 0.25}
EPS = 1e-9


@torch.inference_mode()
def predict_labels(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, device: torch.device, max_len: int,
    batch_size: int = 64,
) -> list[int]:
    """Arg-max class per text, batched by length."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [0] * len(texts)
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        batch = tokenize(tokenizer, [texts[i] for i in idx], max_len, device)
        for i, p in zip(idx, model(**batch).argmax(-1).tolist()):
            out[i] = p
    model.train(was_training)
    return out


def _weighted_rate(hits: Sequence[bool], weights: Sequence[float]) -> float:
    total = sum(weights)
    return sum(w for h, w in zip(hits, weights) if h) / total if total > 0 else 0.0


def example_metrics(truth: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 over the classes seen in truth or prediction, recall per class in truth."""
    classes = sorted(set(truth) | set(pred))
    recall: dict[str, float] = {}
    f1s: list[float] = []
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(truth, pred))
        support = sum(t == c for t in truth)
        predicted = sum(p == c for p in pred)
        if support:
            recall[labels[c]] = tp / support
        f1s.append(2 * tp / (support + predicted) if support + predicted else 0.0)
    return {
        "n": len(truth),
        "accuracy": sum(t == p for t, p in zip(truth, pred)) / len(truth),
        "macro_f1": sum(f1s) / len(f1s),
        "recall": recall,
    }


def evaluate(
    model: torch.nn.Module, tokenizer: Any, items: Sequence[Item], labels: Sequence[str], *,
    device: torch.device, max_len: int,
) -> dict[str, Any]:
    """Gate metrics of one model on the validation rows; `score` is None when there are none."""
    pred = predict_labels(model, tokenizer, [it.text for it in items], device=device, max_len=max_len)
    examples = [(it, p) for it, p in zip(items, pred) if it.source == "example"]
    corrections = [(it, p) for it, p in zip(items, pred) if it.source == "correction"]
    feedback = [(it, p) for it, p in zip(items, pred) if it.signal != 0]
    metrics: dict[str, Any] = {"n": len(items)}
    parts: dict[str, float] = {}
    if examples:
        metrics["examples"] = example_metrics([it.label for it, _ in examples], [p for _, p in examples], labels)
        parts["examples"] = metrics["examples"]["macro_f1"]
    if feedback:
        # A model agrees with a user when it shows the +1'd label, and avoids the −1'd one.
        agree = [(p == it.label) == (it.signal > 0) for it, p in feedback]
        weights = [it.weight for it, _ in feedback]
        pos = [(a, w) for (it, _), a, w in zip(feedback, agree, weights) if it.signal > 0]
        neg = [(a, w) for (it, _), a, w in zip(feedback, agree, weights) if it.signal < 0]
        metrics["feedback"] = {
            "n_positive": len(pos),
            "n_negative": len(neg),
            "agreement_positive": _weighted_rate(*zip(*pos)) if pos else None,
            "disagreement_negative": _weighted_rate(*zip(*neg)) if neg else None,
            "agreement": _weighted_rate(agree, weights),
        }
        parts["feedback"] = metrics["feedback"]["agreement"]
    if corrections:
        acc = _weighted_rate([p == it.label for it, p in corrections], [it.weight for it, _ in corrections])
        metrics["corrections"] = {"n": len(corrections), "accuracy": acc}
        parts["corrections"] = acc
    total = sum(SCORE_WEIGHTS[k] for k in parts)
    metrics["score"] = sum(SCORE_WEIGHTS[k] * v for k, v in parts.items()) / total if parts else None
    return metrics


@dataclass
class Verdict:
    promote: bool
    reason: str
    candidate: dict[str, Any]
    active: dict[str, Any]
    tolerance: float
    max_recall_drop: float

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": "promote" if self.promote else "reject",
            "reason": self.reason,
            "tolerance": self.tolerance,
            "max_recall_drop": self.max_recall_drop,
            "candidate": self.candidate,
            "active": self.active,
        }


def decide(
    candidate: dict[str, Any], active: dict[str, Any], *, tolerance: float = 0.01, max_recall_drop: float = 0.10
) -> Verdict:
    """Promote or reject `candidate` against `active` (both from `evaluate` on the same rows)."""
    def verdict(promote: bool, reason: str) -> Verdict:
        return Verdict(promote, reason, candidate, active, tolerance, max_recall_drop)

    if candidate.get("score") is None or active.get("score") is None:
        return verdict(False, "no validation data (no validation examples, no held-out feedback): "
                              "nothing is promoted on faith")
    problems: list[str] = []
    c, a = candidate["score"], active["score"]
    if c < a - tolerance - EPS:
        problems.append(f"score {c:.4f} is more than {tolerance:g} below the active's {a:.4f}")
    a_recall = (active.get("examples") or {}).get("recall", {})
    c_recall = (candidate.get("examples") or {}).get("recall", {})
    for label in sorted(a_recall):
        drop = a_recall[label] - c_recall.get(label, 0.0)
        if drop > max_recall_drop + EPS:
            problems.append(f"recall of {label!r} fell {a_recall[label]:.3f} -> {c_recall.get(label, 0.0):.3f} "
                            f"(more than {max_recall_drop:g})")
    if problems:
        return verdict(False, "; ".join(problems))
    return verdict(True, f"score {c:.4f} vs active {a:.4f} (tolerance {tolerance:g}); "
                         f"no class's recall fell more than {max_recall_drop:g}")
