"""Running one model over the validation rows: its answer per row (as the kind's targets), the
kind's gate metrics, and how sure it is of each answer — all the gate needs from a model, so the
comparison and the decision never touch torch."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch

from app.kinds.base import TaskKind
from app.learning.dataset import Item
from app.model.encoder import encode_texts, tokenize


@torch.inference_mode()
def model_outputs(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, device: torch.device, max_len: int,
    batch_size: int = 64,
) -> list[torch.Tensor]:
    """The head's output row per text (CPU, float32), batched by length, in the order given; a
    token-level head's row is (tokens of that text, tags), its padding cut off."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[torch.Tensor | None] = [None] * len(texts)
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        batch = tokenize(tokenizer, [texts[i] for i in idx], max_len, device)
        rows = model(**batch).float().cpu()
        lengths = batch["attention_mask"].sum(-1).tolist()
        for i, row, n in zip(idx, rows, lengths):
            out[i] = row[:n] if row.dim() == 2 else row
    model.train(was_training)
    return out  # type: ignore[return-value]


def _offsets_if_needed(kind: TaskKind, tokenizer: Any, texts: Sequence[str], max_len: int) -> list[Any]:
    """Each text's tokens and offsets, for a token-level kind only (the others read pooled rows)."""
    return encode_texts(tokenizer, texts, max_len, offsets=True) if kind.token_level else []


def predict_targets(kind: TaskKind, model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *,
                    device: torch.device, max_len: int) -> list[Any]:
    """The kind's answer per text, as targets comparable with `Item.label`."""
    if not texts:
        return []
    rows = model_outputs(model, tokenizer, texts, device=device, max_len=max_len)
    return kind.predicted_targets(rows, _offsets_if_needed(kind, tokenizer, texts, max_len))


@dataclass
class Evaluation:
    """One model on the validation rows: its answer per row (as targets), the kind's metrics, and
    how sure the model is that each answer is right given what the row says (None: not known).
    For a row from a client that flips signals, `flipped` is that confidence had the signal been
    the opposite (None where the row is clean)."""

    predicted: list[Any]
    metrics: dict[str, Any]
    confidence: list[float] | None = None
    flipped: list[float | None] | None = None


def evaluate(
    kind: TaskKind, model: torch.nn.Module, tokenizer: Any, items: Sequence[Item], labels: Sequence[str], *,
    device: torch.device, max_len: int,
) -> Evaluation:
    """Answers and gate metrics of one model on the validation rows (`score` None when there are none)."""
    if not items:
        return Evaluation([], kind.gate_metrics(items, [], labels), [])
    texts = [it.text for it in items]
    rows = model_outputs(model, tokenizer, texts, device=device, max_len=max_len)
    pred = kind.predicted_targets(rows, _offsets_if_needed(kind, tokenizer, texts, max_len))
    confidence = [kind.confidence(it, row, p) for it, row, p in zip(items, rows, pred)]
    flipped = [kind.confidence(replace(it, signal=-it.signal), row, p) if it.signal != 0 and it.flip > 0 else None
               for it, row, p in zip(items, rows, pred)]
    return Evaluation(pred, kind.gate_metrics(items, pred, labels), confidence, flipped)
