"""One reader for the labelled data files that the simulator, the bench and the scripts use
(`../shared/data/`, see its README), so each of them stops parsing files its own way.

A file holds one text and its answer a row, in one of three shapes, named by the field that
holds the answer:

- `label`: CSV with a header `text,label`; the answer is the label as written;
- `score`: CSV with a header `text,score` (and no `label` column); the answer is a number;
- `spans`: JSON lines of `{"text": ..., "spans": [{"start", "end", "label"}]}`; the answer is the
  spans (character offsets into the text, `end` exclusive), sorted by position.

The shape says nothing of what a task does with the answers; a kind says which shape it reads.

Recommendation data comes in two other files, read here too (`read_baskets`, `read_catalogue`):
an interaction log (`customer_id,invoice,item_id,time,...`, one bought item a row) becomes each
customer's baskets in time order, and an item catalogue (`item_id,text`) each item's text.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LABEL, SCORE, SPANS = "label", "score", "spans"
SHAPES = (LABEL, SCORE, SPANS)


class DataError(ValueError):
    """A data file that cannot be read as one of the shapes; the message names the file and the row."""


@dataclass(frozen=True)
class Record:
    """One row: its text and its answer as the file gives it (a label string, a float score, or a
    list of `{"start", "end", "label"}` spans)."""

    text: str
    value: Any


def shape_of(path: Path) -> str:
    """The file's shape: `spans` for a `.jsonl` file, else `label` or `score` from the CSV header
    (a `label` column wins)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return SPANS
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as fh:
        names = next(csv.reader(fh), [])
    return SCORE if SCORE in names and LABEL not in names else LABEL


def read_records(path: Path) -> list[Record]:
    """Every usable row of the file, in file order; DataError for a file that does not fit its shape
    or has no rows.  CSV texts and answers are stripped and rows with either blank are skipped; a
    JSON line's text is kept as written (its spans point into it) and blank texts are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = _read_spans(path) if shape_of(path) == SPANS else _read_csv(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


@dataclass(frozen=True)
class Basket:
    """One visit of one customer: the invoice, its time as written (ISO, so it sorts), and the
    distinct items bought, in the order the log first lists them."""

    invoice: str
    time: str
    items: tuple[str, ...]


def read_baskets(path: Path) -> dict[str, list[Basket]]:
    """Each customer's baskets in time order (ties kept in file order), from an interaction log
    with the columns `customer_id,invoice,item_id,time`; rows with any of them blank are skipped.
    Customers appear in the order of their first row; DataError for a missing column or no rows."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    needed = {"customer_id", "invoice", "item_id", "time"}
    groups: dict[str, dict[str, tuple[str, dict[str, None]]]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = needed - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: needs the columns {', '.join(sorted(needed))} "
                            f"(missing {', '.join(sorted(missing))})")
        for r in reader:
            customer, invoice, item, time = ((r.get(c) or "").strip() for c in
                                             ("customer_id", "invoice", "item_id", "time"))
            if not (customer and invoice and item and time):
                continue
            invoices = groups.setdefault(customer, {})
            # an invoice keeps its first row's time; a dict keeps first-seen order and drops repeats
            invoices.setdefault(invoice, (time, {}))[1][item] = None
    if not groups:
        raise DataError(f"{path}: no rows")
    return {customer: sorted((Basket(inv, t, tuple(items)) for inv, (t, items) in invoices.items()),
                             key=lambda b: b.time)
            for customer, invoices in groups.items()}


def read_catalogue(path: Path) -> dict[str, str]:
    """Each item's text by its id, from a CSV with the columns `item_id,text` (stripped; rows with
    either blank skipped; a repeated id keeps its last text); DataError when unreadable or empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"item_id", "text"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: needs the columns item_id,text (missing {', '.join(sorted(missing))})")
        items = {}
        for r in reader:
            item, text = (r.get("item_id") or "").strip(), (r.get("text") or "").strip()
            if item and text:
                items[item] = text
    if not items:
        raise DataError(f"{path}: no rows")
    return items


def find_shared(*parts: str) -> Path | None:
    """A file in the shared data folder beside the project (`../shared/data/<parts>`), looked for
    from the working directory and from this checkout; None when it is not there."""
    here = Path(__file__).resolve()
    for root in (Path.cwd(), Path.cwd().parent, here.parents[2], here.parents[3]):
        for folder in (root / "shared" / "data", root / "data"):
            candidate = folder.joinpath(*parts)
            if candidate.exists():
                return candidate
    return None


def _read_csv(path: Path) -> list[Record]:
    column = shape_of(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"text", column} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: needs a header with columns text,label or text,score "
                            f"(missing {', '.join(sorted(missing))})")
        rows = []
        for n, r in enumerate(reader, start=2):
            text, answer = (r.get("text") or "").strip(), (r.get(column) or "").strip()
            if not text or not answer:
                continue
            if column == SCORE:
                try:
                    rows.append(Record(text, float(answer)))
                except ValueError:
                    raise DataError(f"{path}: row {n}: score {answer!r} is not a number") from None
            else:
                rows.append(Record(text, answer))
    return rows


def _read_spans(path: Path) -> list[Record]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text = str(row["text"])
            spans = sorted(({"start": int(s["start"]), "end": int(s["end"]), "label": str(s["label"])}
                            for s in row["spans"]), key=lambda s: (s["start"], s["end"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: line {n}: not a {{text, spans}} object ({exc})") from None
        if text.strip():
            rows.append(Record(text, spans))
    return rows
