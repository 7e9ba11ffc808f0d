"""The encoder every task kind shares: device choice, loading a local encoder, pooling, and
the tokenise/pad helpers a forward needs.  A kind puts its own head on top (`app/kinds/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

if TYPE_CHECKING:  # a type only: importing it for real loads transformers' modelling code, seconds at start-up
    from transformers import PreTrainedModel


def resolve_device(preference: str = "auto") -> torch.device:
    """CUDA when present (or asked for), CPU otherwise.

    On CUDA this also takes cuDNN out of scaled_dot_product_attention's backends (process-wide;
    flash and memory-efficient attention remain): BERT's padded batches carry an explicit mask,
    which torch (2.11, H100) sends to cuDNN attention first in fp16/bf16, and cuDNN builds an
    execution plan for every new (batch, length) shape (46 ms of CPU in one MiniLM forward).
    Serving and training meet a new shape at almost every batch: with cuDNN the torch-fp16 engine
    ran 4.4x slower than fp32 at batch 32, and a first bf16 epoch 5.9x slower than the next
    (reports/gpu/README.md)."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        torch.backends.cuda.enable_cudnn_sdp(False)
        return torch.device("cuda")
    return torch.device("cpu")


def auto_encoder(path: str | Path) -> PreTrainedModel:
    """A bare encoder; BERT-like models skip the pooler we never use."""
    encoder: PreTrainedModel
    try:
        encoder = AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
    except TypeError:
        encoder = AutoModel.from_pretrained(path, local_files_only=True)
    return encoder


def load_base(base_model: str) -> tuple[PreTrainedModel, Any]:
    """Encoder and tokenizer from a local path or an id already in the local cache (never downloads)."""
    tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=True)
    return auto_encoder(base_model), tokenizer


def hidden_size(encoder: nn.Module) -> int:
    """The width of an encoder's token vectors: the size a kind's head reads."""
    config: Any = encoder.config  # a Hugging Face config, under a PeftModel too (nn.Module types it loosely)
    return int(config.hidden_size)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors that are not padding.  hidden (B,T,H), mask (B,T) -> (B,H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class EncoderWithHead(nn.Module):
    """An encoder and a kind's head: `encoder` and `head` are what the store saves and loads.

    forward(ids, mask) -> the head's output for the mean-pooled encoding."""

    # A Hugging Face encoder: a PreTrainedModel, or a PeftModel around one while LoRA trains (which
    # answers for its base model through __getattr__).  They share only nn.Module, so its config,
    # embeddings and save_pretrained are reached duck-typed.
    encoder: Any
    head: nn.Module

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    @property
    def hidden_size(self) -> int:
        return hidden_size(self.encoder)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.embed(input_ids, attention_mask))
        return out

    @torch.no_grad()
    def embed_texts(self, tokenizer: Any, texts: Sequence[str], max_len: int = 64) -> torch.Tensor:
        """Mean-pooled embeddings of a few texts (label names, anchors), on the model's device."""
        device = next(self.parameters()).device
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return self.embed(enc["input_ids"].to(device), enc["attention_mask"].to(device))


class TokenTagger(EncoderWithHead):
    """An encoder whose head reads every token: forward(ids, mask) -> (B, T, C), one row per token
    (padding included; callers trim by the mask).  `embed` still mean-pools, for label texts."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)
        return out


@dataclass(frozen=True)
class Encoded:
    """One text as the model saw it: its token ids and each token's character span in the text
    ((0, 0) for special tokens), so token-level answers map back to the text as sent."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    text: str = ""


def encode_texts(tokenizer: Any, texts: Sequence[str], max_len: int, *, offsets: bool = False) -> list[Encoded]:
    """Token ids (truncated, unpadded) per text, with character offsets when asked (a fast
    tokenizer's offset mapping: code-point indices into the text, whatever sub-words it made)."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_len, return_offsets_mapping=offsets)
    spans = enc["offset_mapping"] if offsets else [[(0, 0)] * len(ids) for ids in enc["input_ids"]]
    return [Encoded(list(ids), [tuple(o) for o in off], text)
            for ids, off, text in zip(enc["input_ids"], spans, texts)]


def tokenize(tokenizer: Any, texts: Sequence[str], max_len: int, device: torch.device) -> dict[str, torch.Tensor]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def pad_ids(ids: Sequence[Sequence[int]], *, pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Already tokenised rows padded to the longest, as forward arguments on `device`."""
    width = max(len(r) for r in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, r in enumerate(ids):
        input_ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
