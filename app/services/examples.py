"""Labelled examples from JSON or CSV: all rows valid or nothing imported."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from app.api.problems import Problem, invalid
from app.db.models import Example, Task
from app.learning.data import split_for, text_hash
from app.schemas import storable


@dataclass(frozen=True)
class Row:
    text: str
    label: str
    where: str  # how to name this row in an error: "examples[3]" or "row 4"


def parse_csv(data: bytes) -> list[Row]:
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Problem(422, "bad-csv", "Invalid CSV", f"The CSV is not UTF-8 (byte {exc.start}).", field="file")
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise Problem(422, "bad-csv", "Invalid CSV", "The CSV is empty; expected a 'text,label' header.", field="file")
    except csv.Error as exc:
        raise Problem(422, "bad-csv", "Invalid CSV", f"row 1: {exc}", field="file", row=1)
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("text", "label") if c not in names]
    if missing:
        raise Problem(422, "bad-csv", "Invalid CSV", f"The header lacks column(s) {', '.join(missing)}; "
                      "expected 'text,label'.", field="file", row=1)
    ti, li = names.index("text"), names.index("label")
    rows: list[Row] = []
    line = 1
    try:
        for record in reader:
            line = reader.line_num
            if not record or all(not c.strip() for c in record):
                continue  # blank line
            if len(record) != len(names):
                raise Problem(422, "bad-csv", "Invalid CSV", f"row {line}: expected {len(names)} fields, "
                              f"found {len(record)}.", field="file", row=line)
            rows.append(Row(record[ti], record[li].strip(), f"row {line}"))
    except csv.Error as exc:
        raise Problem(422, "bad-csv", "Invalid CSV", f"row {reader.line_num}: {exc}", field="file",
                      row=reader.line_num) from None
    if not rows:
        raise Problem(422, "bad-csv", "Invalid CSV", "The CSV has a header but no rows.", field="file")
    return rows


def validate_rows(rows: list[Row], *, labels: list[str], max_chars: int) -> None:
    known = set(labels)
    for r in rows:
        for column, value in (("text", r.text), ("label", r.label)):
            try:
                storable(value)
            except ValueError as exc:
                raise _row_problem(r, column, f"{column} {exc}") from None
        if not r.text.strip():
            raise _row_problem(r, "text", "text is empty")
        if len(r.text) > max_chars:
            raise _row_problem(r, "text", f"text has {len(r.text)} characters; the limit is {max_chars}")
        if r.label not in known:
            raise _row_problem(r, "label", f"{r.label!r} is not a label of this task", slug="unknown-label")


def _row_problem(r: Row, column: str, msg: str, slug: str = "validation") -> Problem:
    if r.where.startswith("row "):
        line = int(r.where.split()[1])
        return Problem(422, slug if slug != "validation" else "bad-csv", "Invalid CSV",
                       f"{r.where}: {msg}; nothing was imported.", field=column, row=line)
    return invalid(f"{r.where}.{column}", f"{r.where}.{column}: {msg}; nothing was imported.", slug=slug)


def import_examples(session: Session, *, task: Task, rows: list[Row]) -> dict[str, int]:
    """Upsert by normalised text (the last row for a text wins), split by its hash, in one transaction."""
    latest: dict[str, Row] = {}
    for r in rows:
        latest[text_hash(r.text)] = r
    hashes = list(latest)
    for start in range(0, len(hashes), 1000):
        session.execute(delete(Example).where(Example.task_id == task.id,
                                              Example.text_hash.in_(hashes[start:start + 1000])))
    values = [{"task_id": task.id, "text": r.text, "label": r.label, "split": split_for(r.text), "text_hash": h}
              for h, r in latest.items()]
    session.execute(insert(Example), values)
    train = sum(1 for v in values if v["split"] == "train")
    return {"imported": len(values), "train": train, "validation": len(values) - train}
