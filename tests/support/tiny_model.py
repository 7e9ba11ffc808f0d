"""The tiny random BERT the tests run on (2 layers, hidden 32) with a small word-piece vocabulary,
saved like a hub model; also used by scripts/soak.py for a quick soak."""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

import torch

from support import WORDS


def write_vocab(path: Path, extra: Sequence[str] = ()) -> None:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = [f"##{c}" for c in string.ascii_lowercase + string.digits]
    vocab = list(dict.fromkeys(specials + chars + pieces + WORDS + list(extra)))
    path.write_text("\n".join(vocab) + "\n")


def tiny_bert(root: Path, extra: Sequence[str] = ()) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    write_vocab(root / "vocab.txt", extra)
    vocab = str(root / "vocab.txt")
    # transformers 5 reads `vocab` (and silently ignores `vocab_file`, leaving 5 tokens); 4 reads `vocab_file`.
    tokenizer = BertTokenizerFast(vocab=vocab, vocab_file=vocab, do_lower_case=True)
    assert tokenizer.vocab_size > 100, "tiny tokenizer lost its vocabulary"
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root
