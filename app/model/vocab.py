"""A vocabulary that grows: characters a task's texts use but the tokenizer can only read as
`[UNK]` (most Chinese characters, to the bundled all-MiniLM-L6-v2) become tokens of their own,
with an embedding row each, trained with the rest of the model and stored with the version
(each version keeps its own tokenizer, so rolling back to one that never grew just works)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch

from app.model.encoder import EncoderWithHead

MAX_NEW_TOKENS = 5000  # per run: the most frequent unknown characters first


def unknown_chars(tokenizer: Any, texts: Iterable[str], *, min_count: int = 1,
                  limit: int = MAX_NEW_TOKENS) -> list[str]:
    """Characters of `texts` that the tokenizer can only read as its unknown token, most frequent
    first (at least `min_count` times, at most `limit` of them)."""
    unk = tokenizer.unk_token
    if unk is None:
        return []
    known: dict[str, bool] = {}
    counts: Counter[str] = Counter()
    for text in texts:
        for ch in text:
            if ch.isspace():
                continue
            if ch not in known:
                known[ch] = tokenizer.tokenize(ch) != [unk]
            if not known[ch]:
                counts[ch] += 1
    return [ch for ch, n in counts.most_common(limit) if n >= min_count]


def grow_vocabulary(model: EncoderWithHead, tokenizer: Any, chars: list[str], *, spread: float = 0.0,
                    seed: int = 0) -> int:
    """Add `chars` to the tokenizer and an embedding row for each to the encoder; how many were
    added.  Each new row starts as a copy of the unknown token's, plus (`spread` > 0) noise of
    `spread` times the embeddings' own standard deviation.  With no spread the grown model
    answers exactly as before until training moves the rows apart; with some, the characters
    are told apart from the first step."""
    if not chars or tokenizer.unk_token_id is None:
        return 0
    added: int = tokenizer.add_tokens(chars)
    if not added:
        return 0
    old = model.encoder.get_input_embeddings().weight.shape[0]
    model.encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        weight = model.encoder.get_input_embeddings().weight
        weight[old:] = weight[tokenizer.unk_token_id]
        if spread > 0:
            g = torch.Generator().manual_seed(seed)
            # drawn on the CPU (the same rows whatever the device), then moved to the weights' device
            noise = torch.randn(weight.shape[0] - old, weight.shape[1], generator=g).to(weight.device)
            weight[old:] += (spread * weight[:old].std(0) * noise).to(weight.dtype)
    return added
