"""Task kinds: the extension point.  A kind is one module implementing `TaskKind`
(`app/kinds/base.py`: four small protocols, one per concern), registered in `KINDS` below;
nothing else in Flywheel names a kind.  The API's task schemas, the console's forms, the
examples' CSV columns and the explanations ask the registry and the kind's declarations.

Adding a kind: write `app/kinds/<kind>.py` with a `TaskKind` subclass (its task's own fields
are its `options`, which the API's schemas pick up), add an instance to `KINDS`, and test it in
`tests/kinds/test_kind_<kind>.py`; a kind that stores more than labels brings its own tables
and migration.  See docs/kinds.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from app.core.errors import Invalid
from app.kinds.base import (Answer, KindAnswers, KindMetrics, KindModel, KindUser, MetricNames, TaskKind, TaskOption,
                            TaskSpec, UserMetrics)
from app.kinds.classification import Classification
from app.kinds.rating import Rating
from app.kinds.tagging import Tagging
from app.model.encoder import EncoderWithHead
from app.model.store import VersionMeta
from app.model.store import load_version as _load_stored

KINDS: dict[str, TaskKind] = {k.name: k for k in (Classification(), Rating(), Tagging())}
DEFAULT_KIND = Classification.name  # a task created without naming its kind is of this one


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


def options_of_every_kind() -> dict[str, tuple[TaskOption, list[str]]]:
    """Each task field some kind has as an option, with the names of the kinds that have it, in
    the registry's order: what the API's task schemas add to the fields every task has."""
    found: dict[str, tuple[TaskOption, list[str]]] = {}
    for kind in KINDS.values():
        for name, option in kind.options.items():
            first, owners = found.setdefault(name, (option, []))
            if first.annotation != option.annotation:
                raise TypeError(f"kinds {owners[0]} and {kind.name} give the task option {name!r} different types")
            owners.append(kind.name)
    return found


def define_task(kind: str, *, labels: list[str], descriptions: dict[str, str], options: Mapping[str, Any]
                ) -> tuple[list[str], dict[str, str]]:
    """A new task's stored (labels, descriptions), from what was asked for: `options` holds any
    kind's option that was given (None: not given).  One that is not this kind's is refused
    naming it, before the kind judges the rest (`KindAnswers.define`)."""
    chosen = get_kind(kind)
    for name, value in options.items():
        if value is not None and name not in chosen.options:
            owners = " and ".join(k.name for k in KINDS.values() if name in k.options) or "other"
            raise Invalid(name, f"a {chosen.name} task takes no '{name}' (that is for {owners} tasks).",
                          slug="field-not-for-kind")
    return chosen.define(labels=labels, descriptions=descriptions,
                         options={name: options.get(name) for name in chosen.options})


def load_version(path: Path, *, device: torch.device, trainable_lora: bool = False
                 ) -> tuple[EncoderWithHead, Any, VersionMeta]:
    """A stored version rebuilt with the head of the kind its metadata records (read once, by the store)."""
    return _load_stored(path, build=_build_for_its_kind, device=device, trainable_lora=trainable_lora)


def _build_for_its_kind(encoder: torch.nn.Module, meta: VersionMeta) -> EncoderWithHead:
    return get_kind(meta.kind).build_model(encoder, meta)


__all__ = ["DEFAULT_KIND", "KINDS", "Answer", "KindAnswers", "KindMetrics", "KindModel", "KindUser", "MetricNames",
           "TaskKind", "TaskOption", "TaskSpec", "UserMetrics", "define_task", "get_kind", "kind_for_data", "load_version",
           "options_of_every_kind"]
