"""A task's training and validation data, read from the database.

Labelled examples, corrections (used as labels) and ±1 signals on the label that was shown,
with contradictions resolved, each client's share capped and a deterministic held-out
slice of feedback kept for the gate.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """One spelling per text: NFKC, case-folded, whitespace collapsed, ends trimmed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hash(text: str) -> str:
    """sha256 hex of the normalised text: the identity of a text across examples and feedback."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def split_for(text: str, validation_fraction: float = 0.2) -> str:
    """'train' or 'validation', fixed by the text's hash, so a text never sits on both sides."""
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1], got {validation_fraction}")
    bucket = int(text_hash(text)[:8], 16) / 0x1_0000_0000  # uniform in [0, 1)
    return "validation" if bucket < validation_fraction else "train"
