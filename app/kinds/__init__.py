"""Task kinds: the extension point.  A kind is one module implementing `TaskKind`
(`app/kinds/base.py`), registered in `KINDS` below; nothing else in Flywheel names a kind.

Adding a kind: write `app/kinds/<kind>.py` with a `TaskKind` subclass, add it to `KINDS`, and
(when its task needs fields of its own) add them to the task schema.  See docs/architecture.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from app.kinds.base import Answer, KindAnswers, KindMetrics, KindModel, KindUser, TaskKind, TaskSpec
from app.kinds.classification import Classification
from app.kinds.rating import Rating
from app.kinds.tagging import Tagging
from app.model.encoder import EncoderWithHead
from app.model.store import VersionMeta
from app.model.store import load_version as _load_stored

KINDS: dict[str, TaskKind] = {k.name: k for k in (Classification(), Rating(), Tagging())}


def get_kind(name: str) -> TaskKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown task kind {name!r}; known: {', '.join(KINDS)}") from None


def kind_for_data(shape: str) -> TaskKind:
    """The kind whose tasks a data file of this shape (`app.tools.datasets.shape_of`) makes: the
    first in the registry that reads it."""
    for kind in KINDS.values():
        if kind.data_shape == shape:
            return kind
    raise ValueError(f"no task kind reads a data file of shape {shape!r}")


def load_version(path: Path, *, device: torch.device, trainable_lora: bool = False
                 ) -> tuple[EncoderWithHead, Any, VersionMeta]:
    """A stored version rebuilt with the head of the kind its metadata records (read once, by the store)."""
    return _load_stored(path, build=_build_for_its_kind, device=device, trainable_lora=trainable_lora)


def _build_for_its_kind(encoder: torch.nn.Module, meta: VersionMeta) -> EncoderWithHead:
    return get_kind(meta.kind).build_model(encoder, meta)


__all__ = ["KINDS", "Answer", "KindAnswers", "KindMetrics", "KindModel", "KindUser", "TaskKind", "TaskSpec",
           "get_kind", "kind_for_data", "load_version"]
