"""The one architecture every version of a classification task shares: encoder + cosine head.

Version 0 is zero-shot: the head's rows are the mean-pooled embeddings of the label names
(and descriptions), so predicting is "which label text is this text closest to". Fine-tuning
trains the same encoder and head, so version 0 and version N load and serve the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ZERO_SHOT_SCALE = 20.0


def resolve_device(preference: str = "auto") -> torch.device:
    """CUDA when present (or asked for), CPU otherwise."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors that are not padding.  hidden (B,T,H), mask (B,T) -> (B,H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class CosineHead(nn.Module):
    """logits = scale · cos(x, w_c): a head whose rows can start as label-text embeddings."""

    def __init__(self, hidden: int, num_labels: int, scale: float = ZERO_SHOT_SCALE) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_labels, hidden) * 0.02)
        # Stored as a log so gradient steps keep it positive.
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=-1)
        w = F.normalize(self.weight, dim=-1)
        return self.log_scale.exp() * (x @ w.t())


class Classifier(nn.Module):
    """Encoder + mean pooling + cosine head.  forward(ids, mask) -> logits (B, C)."""

    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.head = CosineHead(hidden, num_labels)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask))

    @torch.no_grad()
    def init_head_from_texts(self, tokenizer, texts: Sequence[str], max_len: int = 64) -> None:
        """Zero-shot start: each label's row is the embedding of its name/description."""
        device = next(self.parameters()).device
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        emb = self.embed(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        self.head.weight.copy_(F.normalize(emb, dim=-1))


def label_prompt(label: str, description: str | None = None) -> str:
    """The text a label is embedded as for zero-shot: `card_lost` -> `card lost`."""
    name = label.replace("_", " ").replace("-", " ").strip()
    return f"{name}: {description}" if description else name


@dataclass(frozen=True)
class Prediction:
    label: str
    scores: dict[str, float]


def tokenize(tokenizer, texts: Sequence[str], max_len: int, device: torch.device) -> dict[str, torch.Tensor]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


@torch.inference_mode()
def predict_proba(
    model: nn.Module, tokenizer, texts: Sequence[str], *, max_len: int, device: torch.device
) -> torch.Tensor:
    """Softmax probabilities (B, C) on the CPU as float32, for one padded batch."""
    batch = tokenize(tokenizer, texts, max_len, device)
    logits = model(**batch)
    return torch.softmax(logits.float(), dim=-1).cpu()


@torch.inference_mode()
def predict_proba_ids(model: nn.Module, ids: Sequence[Sequence[int]], *, pad_id: int,
                      device: torch.device) -> torch.Tensor:
    """Softmax probabilities (B, C) for already tokenised rows, padded here to the longest."""
    width = max(len(r) for r in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, r in enumerate(ids):
        input_ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
    return torch.softmax(logits.float(), dim=-1).cpu()


def to_predictions(probs: torch.Tensor, labels: Sequence[str]) -> list[Prediction]:
    out: list[Prediction] = []
    for row in probs.tolist():
        best = max(range(len(row)), key=row.__getitem__)
        out.append(Prediction(label=labels[best], scores={lab: round(p, 6) for lab, p in zip(labels, row)}))
    return out
