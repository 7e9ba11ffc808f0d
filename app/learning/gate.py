"""The validation gate: nothing is promoted on faith.

Candidate and active are scored on the same validation rows by the task kind's
`gate_metrics` (for classification: labelled validation examples and the held-out slice of
feedback, see `app/kinds/classification.py`).  Verdict: promote only if the candidate's score
is at most `tolerance` below the active's and no class's recall on the examples falls by more
than `max_recall_drop`.  With no validation rows at all there is nothing to compare, and the
candidate is rejected (say so, and wait for labelled examples or more feedback).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from app.kinds.base import TaskKind
from app.learning.dataset import Item
from app.model.encoder import tokenize

EPS = 1e-9


@torch.inference_mode()
def model_outputs(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, device: torch.device, max_len: int,
    batch_size: int = 64,
) -> list[torch.Tensor]:
    """The head's output row per text (CPU, float32), batched by length, in the order given."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[torch.Tensor | None] = [None] * len(texts)
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        rows = model(**tokenize(tokenizer, [texts[i] for i in idx], max_len, device)).float().cpu()
        for i, row in zip(idx, rows):
            out[i] = row
    model.train(was_training)
    return out  # type: ignore[return-value]


def predict_targets(kind: TaskKind, model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *,
                    device: torch.device, max_len: int) -> list[Any]:
    """The kind's answer per text, as targets comparable with `Item.label`."""
    if not texts:
        return []
    rows = model_outputs(model, tokenizer, texts, device=device, max_len=max_len)
    return kind.predicted_targets(torch.stack(rows))


def evaluate(
    kind: TaskKind, model: torch.nn.Module, tokenizer: Any, items: Sequence[Item], labels: Sequence[str], *,
    device: torch.device, max_len: int,
) -> dict[str, Any]:
    """Gate metrics of one model on the validation rows; `score` is None when there are none."""
    pred = predict_targets(kind, model, tokenizer, [it.text for it in items], device=device, max_len=max_len)
    return kind.gate_metrics(items, pred, labels)


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
