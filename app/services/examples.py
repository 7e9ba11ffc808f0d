"""Labelled examples from JSON or CSV: all rows valid or nothing imported.  What an example's
answer is called (the kind's `value_field`) and what it may be is the task kind's business."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from app.db.session import transaction
from app.db.tables import Example, Task
from app.core.errors import Invalid
from app.kinds import KINDS, TaskKind, TaskSpec, get_kind
from app.process.state import AppState
from app.services.tasks import load_task
from app.core.texts import split_for, storable, text_hash


@dataclass(frozen=True)
class Row:
    text: str
    value: Any  # the answer as sent (a label, a number, spans); the kind makes it the stored label
    where: str  # how to name this row in an error: "examples[3]" or "row 4"
    field: str | None = "label"  # what the request called the answer (None: it gave none)


# what a CSV may call the answer: the value field of each kind whose answer fits a cell (not JSON)
VALUE_COLUMNS = tuple(dict.fromkeys(k.value_field for k in KINDS.values() if k.answer_input != "json"))
HEADERS = f"'text,{VALUE_COLUMNS[0]}'" + "".join(f" (or 'text,{c}')" for c in VALUE_COLUMNS[1:])  # for errors


def parse_csv(data: bytes) -> list[Row]:
    """Rows of a CSV with a `text` column and an answer column (one of `VALUE_COLUMNS`, the first
    where the header has none); other columns are ignored.  The task's kind judges the answers."""
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Invalid("file", f"The CSV is not UTF-8 (byte {exc.start}).", slug="bad-csv", title="Invalid CSV")
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise Invalid("file", f"The CSV is empty; expected a {HEADERS} header.",
                      slug="bad-csv", title="Invalid CSV")
    except csv.Error as exc:
        raise Invalid("file", f"row 1: {exc}", slug="bad-csv", title="Invalid CSV", row=1)
    names = [h.strip().lower() for h in header]
    value_field = next((c for c in VALUE_COLUMNS if c in names), VALUE_COLUMNS[0])
    missing = [c for c in ("text", value_field) if c not in names]
    if missing:
        raise Invalid("file", f"The header lacks column(s) {', '.join(missing)}; expected {HEADERS}.",
                      slug="bad-csv", title="Invalid CSV", row=1)
    ti, li = names.index("text"), names.index(value_field)
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
            rows.append(Row(record[ti], record[li].strip(), f"row {line}", value_field))
    except csv.Error as exc:
        raise Invalid("file", f"row {reader.line_num}: {exc}", slug="bad-csv",
                      title="Invalid CSV", row=reader.line_num) from None
    if not rows:
        raise Invalid("file", "The CSV has a header but no rows.", slug="bad-csv", title="Invalid CSV")
    return rows


def validate_rows(rows: list[Row], *, kind: TaskKind, spec: TaskSpec, max_chars: int) -> list[tuple[str, str]]:
    """Every row must be storable, non-empty, within the size limit, and carry an answer the
    task's kind accepts; the first bad row is named in the error.  (text, stored label) per row."""
    out = []
    for r in rows:
        try:
            storable(r.text)
        except ValueError as exc:
            raise _row_problem(r, "text", f"text {exc}") from None
        field = r.field or kind.value_field
        if isinstance(r.value, str):
            try:
                storable(r.value)
            except ValueError as exc:
                raise _row_problem(r, field, f"{field} {exc}") from None
        if not r.text.strip():
            raise _row_problem(r, "text", "text is empty")
        if len(r.text) > max_chars:
            raise _row_problem(r, "text", f"text has {len(r.text)} characters; the limit is {max_chars}")
        if r.value is None:
            raise _row_problem(r, field, f"{field} is missing (a {kind.name} task's examples carry "
                                         f"'{kind.value_field}')")
        try:
            out.append((r.text, kind.canonical(spec, r.value, text=r.text, field=field)))
        except Invalid as exc:
            raise _row_problem(r, exc.field or field, exc.detail, slug=exc.slug) from None
    return out


def _row_problem(r: Row, column: str, msg: str, slug: str = "validation") -> Invalid:
    if r.where.startswith("row "):
        line = int(r.where.split()[1])
        return Invalid(column, f"{r.where}: {msg}; nothing was imported.",
                       slug=slug if slug != "validation" else "bad-csv", title="Invalid CSV", row=line)
    return Invalid(f"{r.where}.{column}", f"{r.where}.{column}: {msg}; nothing was imported.", slug=slug)


def _upsert(session: Session, *, task: Task, rows: list[tuple[str, str]]) -> dict[str, int]:
    """Upsert by normalised text (the last row for a text wins), split by its hash."""
    latest: dict[str, tuple[str, str]] = {}
    for text, label in rows:
        latest[text_hash(text)] = (text, label)
    hashes = list(latest)
    for start in range(0, len(hashes), 1000):
        session.execute(delete(Example).where(Example.task_id == task.id,
                                              Example.text_hash.in_(hashes[start:start + 1000])))
    values = [{"task_id": task.id, "text": text, "label": label, "split": split_for(text), "text_hash": h}
              for h, (text, label) in latest.items()]
    session.execute(insert(Example), values)
    train = sum(1 for v in values if v["split"] == "train")
    return {"imported": len(values), "train": train, "validation": len(values) - train}


def import_examples(state: AppState, *, task: str, rows: list[Row]) -> dict[str, int]:
    """All rows valid (texts within FLYWHEEL_MAX_TEXT_CHARS) and imported in one transaction, or
    nothing imported (the bad row named)."""
    with transaction(state.sessions) as s:
        t = load_task(s, name=task)
        checked = validate_rows(rows, kind=get_kind(t.kind), spec=TaskSpec.of(t),
                                max_chars=state.settings.max_text_chars)
        return _upsert(s, task=t, rows=checked)
