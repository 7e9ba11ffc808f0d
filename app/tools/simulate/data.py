"""The traffic and test sets of one simulation, read through the one data-set reader
(`app/tools/datasets.py`).  A file's shape picks the task's kind (`app.kinds.kind_for_data`);
the kind says what task the traffic file's answers make (`task_from_data`), and each row's
answer is kept as the task would store it (`canonical`), rows the task cannot hold left out.

Sampling is seeded: the same files, sizes and seed give the same scenario, so every arm sees
the same traffic in the same order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from app.core.errors import Invalid
from app.core.texts import normalize_text
from app.kinds import TaskKind, TaskSpec, kind_for_data
from app.tools.datasets import DataError, Record, read_records, shape_of

__all__ = ["DataError", "Example", "Scenario", "build_scenario"]


@dataclass(frozen=True)
class Example:
    text: str
    label: str  # the right answer, as the task stores it


@dataclass
class Scenario:
    kind: str  # the task's kind, as the registry names it
    task: dict[str, Any]  # the create-task fields besides name and kind: its labels, or its kind's options
    traffic: list[Example]  # in the order users send it; round r is traffic[(r-1)*T : r*T]
    test: list[Example]
    notes: list[str] = field(default_factory=list)  # what was dropped or cut, for the report
    labels_in_file: int = 0  # labels the traffic file has (before --max-labels chose some)

    @property
    def labels(self) -> list[str]:
        """The labels the task is created with (none for a kind that makes them from its options)."""
        return list(self.task.get("labels") or [])

    @property
    def value_range(self) -> tuple[float, float] | None:
        """The task's range, for a kind whose task has one."""
        lo_hi = self.task.get("range")
        return (lo_hi[0], lo_hi[1]) if lo_hi else None


def dedupe(rows: list[Example], exclude: set[str] | None = None) -> list[Example]:
    """First occurrence of each normalised text, leaving out those in `exclude`."""
    seen = set(exclude or ())
    out: list[Example] = []
    for row in rows:
        key = normalize_text(row.text)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def choose_labels(labels: list[str], max_labels: int | None, rng: random.Random) -> list[str]:
    """All labels, or a seeded sample of `max_labels` of them; sorted either way."""
    labels = sorted(labels)
    if max_labels is None or max_labels >= len(labels):
        return labels
    if max_labels < 2:
        raise DataError("--max-labels must be at least 2")
    return sorted(rng.sample(labels, max_labels))


def _spec(kind: TaskKind, task: dict[str, Any]) -> TaskSpec:
    """The task as the server will define it, to store each row's answer as it would."""
    try:
        labels, descriptions = kind.define(labels=list(task.get("labels") or []), descriptions={},
                                           options={name: task.get(name) for name in kind.options})
    except Invalid as exc:
        raise DataError(f"the task the files make: {exc.field}: {exc.detail}") from None
    return TaskSpec(name="scenario", kind=kind.name, labels=labels, descriptions=descriptions)


def _examples(kind: TaskKind, spec: TaskSpec, rows: list[Record]) -> tuple[list[Example], int]:
    """Each row the task can hold, its answer as stored; and how many it cannot."""
    out, refused = [], 0
    for r in rows:
        try:
            out.append(Example(r.text, kind.canonical(spec, r.value, text=r.text, field="answer")))
        except Invalid:
            refused += 1
    return out, refused


def build_scenario(
    *,
    train_path: Path,
    test_path: Path,
    traffic_size: int,
    test_size: int | None,
    max_labels: int | None,
    seed: int,
    max_chars: int = 2000,
    options: Mapping[str, Any] | None = None,
) -> Scenario:
    """Traffic: `traffic_size` texts from the train file (shuffled); test: up to `test_size` texts
    from the test file.  The task is what the train file's answers make, with `options` (a kind's
    own task fields, e.g. a scale's range) given instead where its kind has them; a kind whose
    answers are its labels keeps `max_labels` of them (a seeded sample).  Both sets keep only the
    rows the task can hold; texts in the test set never appear in the traffic; texts longer than
    the server's `max_chars` are left out."""
    rng = random.Random(seed)
    shape = shape_of(train_path)
    if shape_of(test_path) != shape:
        raise DataError(f"{test_path}: not a file like --train's ({shape} answers)")
    kind = kind_for_data(shape)
    train_rows, test_rows = read_records(train_path), read_records(test_path)
    task = {**kind.task_from_data([r.value for r in train_rows]),
            **{k: v for k, v in (options or {}).items() if k in kind.options}}
    in_file = list(task.get("labels") or [])
    notes: list[str] = []
    if kind.answers_are_labels:
        task["labels"] = choose_labels(in_file, max_labels, rng)
        if len(task["labels"]) < len(in_file):
            notes.append(f"{len(task['labels'])} of the {len(in_file)} labels, chosen at random with seed {seed}")
        test_only = sorted({r.value for r in test_rows} - set(in_file))
        if test_only:
            notes.append(f"test rows with labels absent from the traffic file were left out: {', '.join(test_only[:10])}")
    too_long = sum(len(r.text) > max_chars for r in train_rows + test_rows)
    if too_long:
        notes.append(f"{too_long} texts longer than {max_chars} characters were left out")

    spec = _spec(kind, task)
    test, refused_test = _examples(kind, spec, [r for r in test_rows if len(r.text) <= max_chars])
    train, refused_train = _examples(kind, spec, [r for r in train_rows if len(r.text) <= max_chars])
    if not kind.answers_are_labels and refused_test + refused_train:  # (labels left out are noted above)
        notes.append(f"{refused_test + refused_train} rows whose answers the task cannot hold were left out")

    test = dedupe(test)
    rng.shuffle(test)
    if test_size is not None:
        test = test[:test_size]
    if not test:
        raise DataError(f"{test_path}: no test rows the task can hold")
    pool = dedupe(train, exclude={normalize_text(r.text) for r in test})
    rng.shuffle(pool)
    if len(pool) < traffic_size:
        raise DataError(f"{train_path}: {len(pool)} usable traffic texts, but rounds x traffic-per-round needs "
                        f"{traffic_size}")
    traffic = pool[:traffic_size]
    if kind.answers_are_labels:
        missing = sorted(set(task["labels"]) - {r.label for r in traffic})
        if missing:
            notes.append(f"{len(missing)} labels never occur in the traffic sample")
    return Scenario(kind=kind.name, task=task, traffic=traffic, test=test, notes=notes, labels_in_file=len(in_file))
