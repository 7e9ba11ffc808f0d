"""What a text is, independent of where it is stored: its normal form, its identity (a hash
of that form), its fixed side of the train/validation split, and whether it can be stored."""

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


def split_for(text: str, validation_fraction: float = 0.2, salt: str = "") -> str:
    """'train' or 'validation', fixed by the text's hash (and `salt`), so a text never sits on both
    sides; another salt draws another slice."""
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1], got {validation_fraction}")
    digest = text_hash(text) if not salt else hashlib.sha256(f"{salt}\0{text_hash(text)}".encode()).hexdigest()
    bucket = int(digest[:8], 16) / 0x1_0000_0000  # uniform in [0, 1)
    return "validation" if bucket < validation_fraction else "train"


def storable(value: str) -> str:
    """Text every database and the tokenizer accept: no NUL, no lone surrogate."""
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode (lone surrogate)") from None
    return value
