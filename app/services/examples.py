"""Labelled examples from JSON or CSV: all rows valid or nothing imported."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session, sessionmaker

from app.db.session import transaction
from app.db.tables import Example, Task
from app.errors import Invalid
from app.kinds import TaskSpec, get_kind
from app.services.tasks import load_task
from app.texts import split_for, storable, text_hash


@dataclass(frozen=True)
class Row:
    text: str
    label: str
    where: str  # how to name this row in an error: "examples[3]" or "row 4"


def parse_csv(data: bytes) -> list[Row]:
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Invalid("file", f"The CSV is not UTF-8 (byte {exc.start}).", slug="bad-csv", title="Invalid CSV")
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise Invalid("file", "The CSV is empty; expected a 'text,label' header.", slug="bad-csv", title="Invalid CSV")
    except csv.Error as exc:
        raise Invalid("file", f"row 1: {exc}", slug="bad-csv", title="Invalid CSV", row=1)
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("text", "label") if c not in names]
    if missing:
        raise Invalid("file", f"The header lacks column(s) {', '.join(missing)}; "
                      "expected 'text,label'.", slug="bad-csv", title="Invalid CSV", row=1)
    ti, li = names.index("text"), names.index("label")
    rows: list[Row] = []
    line = 1
    try:
        for record in reader:
            line = reader.line_num
            if not record or all(not c.strip() for c in record):
                continue  # blank line
            if len(record) != len(names):
                raise Invalid("file", f"row {line}: expected {len(names)} fields, "
                              f"found {len(record)}.", slug="bad-csv", title="Invalid CSV", row=line)
            rows.append(Row(record[ti], record[li].strip(), f"row {line}"))
    except csv.Error as exc:
        raise Invalid("file", f"row {reader.line_num}: {exc}", slug="bad-csv",
                      title="Invalid CSV", row=reader.line_num) from None
    if not rows:
        raise Invalid("file", "The CSV has a header but no rows.", slug="bad-csv", title="Invalid CSV")
    return rows


def validate_rows(rows: list[Row], *, check_label: Callable[[str], None], max_chars: int) -> None:
    """Every row must be storable, non-empty, within the size limit, and carry a label the task's
    kind accepts; the first bad row is named in the error."""
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
        try:
            check_label(r.label)
        except Invalid as exc:
            raise _row_problem(r, "label", exc.detail, slug=exc.slug) from None


def _row_problem(r: Row, column: str, msg: str, slug: str = "validation") -> Invalid:
    if r.where.startswith("row "):
        line = int(r.where.split()[1])
        return Invalid(column, f"{r.where}: {msg}; nothing was imported.",
                       slug=slug if slug != "validation" else "bad-csv", title="Invalid CSV", row=line)
    return Invalid(f"{r.where}.{column}", f"{r.where}.{column}: {msg}; nothing was imported.", slug=slug)


def _upsert(session: Session, *, task: Task, rows: list[Row]) -> dict[str, int]:
    """Upsert by normalised text (the last row for a text wins), split by its hash."""
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


def import_examples(sessions: sessionmaker[Session], *, task: str, rows: list[Row], max_chars: int
                    ) -> dict[str, int]:
    """All rows valid and imported in one transaction, or nothing imported (the bad row named)."""
    with transaction(sessions) as s:
        t = load_task(s, task)
        kind, spec = get_kind(t.kind), TaskSpec.of(t)
        validate_rows(rows, check_label=lambda label: kind.check_label(spec, label, field="label"),
                      max_chars=max_chars)
        return _upsert(s, task=t, rows=rows)
