"""The traffic and test sets of one simulation, read from `text,label` CSV files.

Any CSV with a `text` and a `label` column works.  Sampling is seeded: the same files, sizes
and seed give the same scenario, so every arm sees the same traffic in the same order.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from app.texts import normalize_text


class DataError(ValueError):
    """A data file or size that the simulator cannot use; the message says which."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass
class Scenario:
    labels: list[str]
    traffic: list[Example]  # in the order users send it; round r is traffic[(r-1)*T : r*T]
    test: list[Example]
    notes: list[str] = field(default_factory=list)  # what was dropped or cut, for the report

    def sizes(self) -> dict[str, object]:
        return {"labels": len(self.labels), "traffic": len(self.traffic), "test": len(self.test)}


def read_csv(path: Path) -> list[Example]:
    """Rows of a `text,label` CSV (UTF-8, header required); blank texts or labels are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"text", "label"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: needs a header with columns text,label (missing {', '.join(sorted(missing))})")
        rows = [Example(r["text"].strip(), r["label"].strip()) for r in reader
                if (r.get("text") or "").strip() and (r.get("label") or "").strip()]
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


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


def build_scenario(
    *,
    train_path: Path,
    test_path: Path,
    traffic_size: int,
    test_size: int | None,
    max_labels: int | None,
    seed: int,
    max_chars: int = 2000,
) -> Scenario:
    """Traffic: `traffic_size` texts from the train file (shuffled); test: up to `test_size` texts
    from the test file.  Both keep only the chosen labels; texts in the test set never appear in
    the traffic; texts longer than the server's `max_chars` are left out."""
    rng = random.Random(seed)
    train_rows, test_rows = read_csv(train_path), read_csv(test_path)
    notes: list[str] = []

    train_labels = set(r.label for r in train_rows)
    labels = choose_labels(sorted(train_labels), max_labels, rng)
    if len(labels) < len(train_labels):
        notes.append(f"{len(labels)} of the {len(train_labels)} labels, chosen at random with seed {seed}")
    keep = set(labels)

    test_only = sorted(set(r.label for r in test_rows) - train_labels)
    if test_only:
        notes.append(f"test rows with labels absent from the traffic file were left out: {', '.join(test_only[:10])}")
    too_long = sum(len(r.text) > max_chars for r in train_rows + test_rows)
    if too_long:
        notes.append(f"{too_long} texts longer than {max_chars} characters were left out")

    test = dedupe([r for r in test_rows if r.label in keep and len(r.text) <= max_chars])
    rng.shuffle(test)
    if test_size is not None:
        test = test[:test_size]
    if not test:
        raise DataError(f"{test_path}: no test rows with the chosen labels")

    test_keys = {normalize_text(r.text) for r in test}
    pool = dedupe([r for r in train_rows if r.label in keep and len(r.text) <= max_chars], exclude=test_keys)
    rng.shuffle(pool)
    if len(pool) < traffic_size:
        raise DataError(f"{train_path}: {len(pool)} usable traffic texts with the chosen labels, "
                        f"but rounds x traffic-per-round needs {traffic_size}")
    traffic = pool[:traffic_size]
    missing = sorted(keep - {r.label for r in traffic})
    if missing:
        notes.append(f"{len(missing)} labels never occur in the traffic sample")
    return Scenario(labels=labels, traffic=traffic, test=test, notes=notes)


def label_counts(rows: list[Example]) -> dict[str, int]:
    return dict(sorted(Counter(r.label for r in rows).items()))
