"""The traffic and test sets of one simulation, read from `text,label` CSV files (a
classification), `text,score` files (a rating, e.g. `../shared/data/vader/`) or JSON lines of
`{"text", "spans"}` (a tagging, e.g. `../shared/data/wnut16/`).

Any CSV with a `text` and a `label` (or `score`) column works.  Sampling is seeded: the same files, sizes
and seed give the same scenario, so every arm sees the same traffic in the same order.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from app.core.texts import normalize_text


class DataError(ValueError):
    """A data file or size that the simulator cannot use; the message says which."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass
class Scenario:
    labels: list[str]  # a classification's labels; empty for a rating
    traffic: list[Example]  # in the order users send it; round r is traffic[(r-1)*T : r*T]
    test: list[Example]
    notes: list[str] = field(default_factory=list)  # what was dropped or cut, for the report
    kind: str = "classification"  # classification (text,label) | rating (text,score) | tagging (.jsonl)
    value_range: tuple[float, float] | None = None  # a rating's scale
    labels_in_file: int = 0  # labels the traffic file has (before --max-labels chose some)

    def sizes(self) -> dict[str, object]:
        return {"labels": len(self.labels), "traffic": len(self.traffic), "test": len(self.test)}


def answer_column(path: Path) -> str:
    """`label` for a classification file, `score` for a rating file (a `label` column wins)."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        names = next(csv.reader(fh), [])
    return "score" if "score" in names and "label" not in names else "label"


def read_csv(path: Path) -> list[Example]:
    """Rows of a `text,label` or `text,score` CSV (UTF-8, header required); blank texts or answers
    are skipped; a score must be a number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    column = answer_column(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"text", column} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: needs a header with columns text,label or text,score "
                            f"(missing {', '.join(sorted(missing))})")
        rows = [Example(r["text"].strip(), r[column].strip()) for r in reader
                if (r.get("text") or "").strip() and (r.get(column) or "").strip()]
    if column == "score":
        for i, r in enumerate(rows, start=2):
            try:
                float(r.label)
            except ValueError:
                raise DataError(f"{path}: row {i}: score {r.label!r} is not a number") from None
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
    value_range: tuple[float, float] | None = None,
) -> Scenario:
    """Traffic: `traffic_size` texts from the train file (shuffled); test: up to `test_size` texts
    from the test file.  Both keep only the chosen labels; texts in the test set never appear in
    the traffic; texts longer than the server's `max_chars` are left out.  A `text,score` file
    makes a rating scenario on `value_range` (default: the scores' whole numbers around them)."""
    rng = random.Random(seed)
    if Path(train_path).suffix == ".jsonl":
        return _tagging_scenario(read_jsonl(train_path), read_jsonl(test_path), traffic_size=traffic_size,
                                 test_size=test_size, rng=rng, max_chars=max_chars, train_path=train_path)
    train_rows, test_rows = read_csv(train_path), read_csv(test_path)
    if answer_column(train_path) == "score":
        return _rating_scenario(train_rows, test_rows, traffic_size=traffic_size, test_size=test_size, rng=rng,
                                max_chars=max_chars, value_range=value_range, train_path=train_path)
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
    return Scenario(labels=labels, traffic=traffic, test=test, notes=notes, labels_in_file=len(train_labels))


def read_jsonl(path: Path) -> list[Example]:
    """Rows of a JSON lines file of {"text", "spans": [{"start", "end", "label"}]}; each label is
    the spans' stored form (sorted, compact JSON), as the server stores a tagging answer."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            spans = sorted(({"start": int(s["start"]), "end": int(s["end"]), "label": str(s["label"])}
                            for s in row["spans"]), key=lambda s: (s["start"], s["end"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: line {n}: not a {{text, spans}} object ({exc})") from None
        if row["text"].strip():
            rows.append(Example(row["text"], json.dumps(spans, separators=(",", ":"), ensure_ascii=False)))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _tagging_scenario(train_rows: list[Example], test_rows: list[Example], *, traffic_size: int,
                      test_size: int | None, rng: random.Random, max_chars: int, train_path: Path) -> Scenario:
    labels = sorted({s["label"] for r in train_rows for s in json.loads(r.label)})
    keep = set(labels)
    ok = lambda r: len(r.text) <= max_chars and all(s["label"] in keep for s in json.loads(r.label))  # noqa: E731
    traffic, test = _sample(train_rows, test_rows, ok, traffic_size=traffic_size, test_size=test_size, rng=rng,
                            train_path=train_path)
    return Scenario(labels=labels, traffic=traffic, test=test, kind="tagging", labels_in_file=len(labels))


def _sample(train_rows: list[Example], test_rows: list[Example], keep: Callable[[Example], bool], *,
            traffic_size: int, test_size: int | None, rng: random.Random, train_path: Path
            ) -> tuple[list[Example], list[Example]]:
    """(traffic, test): the rows `keep` accepts, deduplicated and shuffled; no test text in the traffic."""
    test = dedupe([r for r in test_rows if keep(r)])
    rng.shuffle(test)
    if test_size is not None:
        test = test[:test_size]
    pool = dedupe([r for r in train_rows if keep(r)], exclude={normalize_text(r.text) for r in test})
    rng.shuffle(pool)
    if len(pool) < traffic_size:
        raise DataError(f"{train_path}: {len(pool)} usable traffic texts, but rounds x traffic-per-round needs "
                        f"{traffic_size}")
    return pool[:traffic_size], test


def _rating_scenario(train_rows: list[Example], test_rows: list[Example], *, traffic_size: int,
                     test_size: int | None, rng: random.Random, max_chars: int,
                     value_range: tuple[float, float] | None, train_path: Path) -> Scenario:
    scores = [float(r.label) for r in train_rows + test_rows]
    if value_range is None:
        value_range = (float(math.floor(min(scores))), float(math.ceil(max(scores))))
    lo, hi = value_range
    if not lo < hi:
        raise DataError(f"the range must have lowest < highest, got {lo:g},{hi:g}")
    notes = []
    inside = [r for r in train_rows + test_rows if lo <= float(r.label) <= hi]
    if len(inside) < len(train_rows) + len(test_rows):
        notes.append(f"{len(train_rows) + len(test_rows) - len(inside)} rows outside the range were left out")
    keep = lambda r: lo <= float(r.label) <= hi and len(r.text) <= max_chars  # noqa: E731
    traffic, test = _sample(train_rows, test_rows, keep, traffic_size=traffic_size, test_size=test_size, rng=rng,
                            train_path=train_path)
    return Scenario(labels=[], traffic=traffic, test=test, notes=notes, kind="rating", value_range=(lo, hi),
                    labels_in_file=0)


def label_counts(rows: list[Example]) -> dict[str, int]:
    return dict(sorted(Counter(r.label for r in rows).items()))
