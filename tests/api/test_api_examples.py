"""POST /v1/tasks/{task}/examples: JSON, CSV as the body and CSV as a multipart upload; the
deterministic train/validation split; and all-or-nothing imports that name the bad row.

This module runs with small limits (50 characters a text, 4 KiB an upload)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.config import Settings
from app.db.tables import Example
from app.core.texts import normalize_text, split_for, text_hash
from support import make_settings
from support.api import LABELS, assert_problem, create_task, rows, table_counts

MAX_CHARS = 50
MAX_UPLOAD = 4096
TEXTS = [f"customer message number {i}" for i in range(20)]
CSV = "text/csv"


@pytest.fixture
def settings(tmp_path: Path, db_url: str, tiny_model_dir: Path) -> Settings:
    return make_settings(tmp_path / "data", db_url, tiny_model_dir, max_text_chars=MAX_CHARS,
                         max_upload_bytes=MAX_UPLOAD)


def _json(client, examples: list[dict], task: str = "tickets"):
    return client.post(f"/v1/tasks/{task}/examples", json={"examples": examples})


def _csv(client, data: str | bytes, ctype: str = CSV, task: str = "tickets"):
    body = data.encode() if isinstance(data, str) else data
    return client.post(f"/v1/tasks/{task}/examples", content=body, headers={"content-type": ctype})


def _upload(client, data: str | bytes, task: str = "tickets", field: str = "file"):
    body = data.encode() if isinstance(data, str) else data
    return client.post(f"/v1/tasks/{task}/examples", files={field: ("examples.csv", body, CSV)})


def _stored(client) -> dict[str, tuple[str, str]]:
    """normalised text -> (label, split)"""
    return {normalize_text(e.text): (e.label, e.split) for e in rows(client, Example)}


def _expected_split(texts: list[str]) -> dict[str, int]:
    val = sum(split_for(t) == "validation" for t in texts)
    return {"imported": len(texts), "train": len(texts) - val, "validation": val}


# ---------------------------------------------------------------- the three ways in


def test_json_examples_are_imported_and_split_by_text_hash(client, task) -> None:
    examples = [{"text": t, "label": LABELS[i % 3]} for i, t in enumerate(TEXTS)]
    r = _json(client, examples)
    assert r.status_code == 201, r.text
    expected = _expected_split(TEXTS)
    assert r.json() == expected
    assert 0 < expected["validation"] < expected["train"]  # both sides are exercised
    stored = {e.text: e for e in rows(client, Example)}
    assert set(stored) == set(TEXTS)
    for i, t in enumerate(TEXTS):
        assert stored[t].label == LABELS[i % 3]
        assert stored[t].split == split_for(t)
        assert stored[t].text_hash == text_hash(t)
    counts = client.get("/v1/tasks/tickets").json()["counts"]["examples"]
    assert counts == {"train": expected["train"], "validation": expected["validation"], "total": len(TEXTS)}


def test_csv_body_is_imported(client, task) -> None:
    data = "text,label\n" + "".join(f"{t},{LABELS[i % 3]}\n" for i, t in enumerate(TEXTS))
    r = _csv(client, data)
    assert r.status_code == 201, r.text
    assert r.json() == _expected_split(TEXTS)
    assert _stored(client) == {t: (LABELS[i % 3], split_for(t)) for i, t in enumerate(TEXTS)}


def test_csv_body_accepts_csv_content_types(client, task) -> None:
    for ctype in ["application/csv", "text/plain", "text/csv; charset=utf-8"]:
        r = _csv(client, "text,label\nmy card is gone,card_lost\n", ctype)
        assert r.status_code == 201, (ctype, r.text)
        assert r.json()["imported"] == 1
    assert len(rows(client, Example)) == 1


def test_csv_multipart_upload_is_imported(client, task) -> None:
    data = "text,label\n" + "".join(f"{t},{LABELS[i % 3]}\n" for i, t in enumerate(TEXTS))
    r = _upload(client, data)
    assert r.status_code == 201, r.text
    assert r.json() == _expected_split(TEXTS)
    assert len(rows(client, Example)) == len(TEXTS)


def test_csv_with_bom_crlf_quotes_extra_columns_and_any_column_order(client, task) -> None:
    data = ('\ufeffid,Label,Text\r\n'
            '1,billing,"charged twice, for one invoice"\r\n'
            '2, card_lost ,"a line\nbreak inside quotes"\r\n'
            '\r\n'  # a blank line is skipped
            '3,weather,"she said ""rain"""\r\n')
    r = _csv(client, data)
    assert r.status_code == 201, r.text
    assert _stored(client) == {
        "charged twice, for one invoice": ("billing", split_for("charged twice, for one invoice")),
        "a line break inside quotes": ("card_lost", split_for("a line\nbreak inside quotes")),
        'she said "rain"': ("weather", split_for('she said "rain"')),
    }


# ---------------------------------------------------------------- deterministic split, upsert by text


def test_same_text_in_other_case_and_spacing_updates_one_row_on_one_side(client, task) -> None:
    assert _json(client, [{"text": "Where is my Card?", "label": "billing"}]).status_code == 201
    r = _csv(client, "text,label\n  where IS my\tcard?  ,card_lost\n")
    assert r.status_code == 201 and r.json()["imported"] == 1
    [row] = rows(client, Example)
    assert row.label == "card_lost"
    assert row.split == split_for("Where is my Card?") == split_for("  where IS my\tcard?  ")
    assert client.get("/v1/tasks/tickets").json()["counts"]["examples"]["total"] == 1


def test_duplicates_within_one_upload_keep_the_last(client, task) -> None:
    r = _json(client, [{"text": "Hello there", "label": "billing"}, {"text": "hello  THERE ", "label": "weather"}])
    assert r.status_code == 201 and r.json()["imported"] == 1
    assert _stored(client) == {"hello there": ("weather", split_for("hello there"))}


def test_reuploading_everything_changes_nothing_but_labels(client, task) -> None:
    first = [{"text": t, "label": "billing"} for t in TEXTS]
    second = [{"text": t.upper(), "label": "weather"} for t in reversed(TEXTS)]
    assert _json(client, first).json() == _json(client, second).json()
    stored = _stored(client)
    assert len(stored) == len(TEXTS)
    assert all(label == "weather" and split == split_for(t) for t, (label, split) in stored.items())


def test_split_does_not_depend_on_task_label_or_batch(client, task) -> None:
    create_task(client, "other", labels=["x", "y"])
    assert _json(client, [{"text": t, "label": "billing"} for t in TEXTS]).status_code == 201
    for t in TEXTS:  # one at a time, into another task, with another label
        assert _json(client, [{"text": t, "label": "y"}], task="other").status_code == 201
    by_task: dict[int, dict[str, str]] = {}
    for e in rows(client, Example):
        by_task.setdefault(e.task_id, {})[e.text] = e.split
    a, b = by_task.values()
    assert a == b


# ---------------------------------------------------------------- refused: nothing imported


def _refused(client, r, status: int, slug: str, field: str | None, *, row: int | None = None,
             mentions: tuple[str, ...] = (), before: dict | None = None) -> dict:
    body = assert_problem(r, status, slug, field, mentions=mentions)
    if row is not None:
        assert body["row"] == row
        if row > 1:
            assert f"row {row}" in body["detail"]
    if before is not None:
        assert table_counts(client) == before
    return body


def test_csv_missing_column_reports_row_1(client, task) -> None:
    before = table_counts(client)
    r = _csv(client, "text,category\nmy card,card_lost\n")
    _refused(client, r, 422, "bad-csv", "file", row=1, mentions=("header", "label"), before=before)


@pytest.mark.parametrize("send", [_csv, _upload], ids=["body", "multipart"])
def test_csv_bad_row_reports_its_number_and_imports_nothing(client, task, send) -> None:
    assert _json(client, [{"text": "kept as it was", "label": "billing"}]).status_code == 201
    before = table_counts(client)
    data = ("text,label\n"
            "good one,billing\n"
            "kept as it was,weather\n"  # would update the existing example
            "broken,billing,surplus\n"
            "good two,weather\n")
    _refused(client, send(client, data), 422, "bad-csv", "file", row=4, mentions=("3",), before=before)
    assert _stored(client) == {"kept as it was": ("billing", split_for("kept as it was"))}


BAD_ROWS = [
    ("my card,groceries", "unknown-label", "label", ("groceries",)),
    ("   ,billing", "bad-csv", "text", ("empty",)),
    ("x" * (MAX_CHARS + 1) + ",billing", "bad-csv", "text", (str(MAX_CHARS),)),
    ("only one field", "bad-csv", "file", ()),
]
UNUSABLE_CSV = [(b"", ("empty",)), (b"text,label\n", ("no rows",)), (b"text,label\ncaf\xe9,billing\n", ("utf-8",))]


def test_csv_invalid_row_is_reported_by_number(client, task) -> None:
    before = table_counts(client)
    for line, slug, field, mentions in BAD_ROWS:
        r = _csv(client, f"text,label\nfine,billing\nalso fine,weather\n{line}\n")
        _refused(client, r, 422, slug, field, row=4, mentions=mentions, before=before)


def test_unusable_csv_is_422(client, task) -> None:
    before = table_counts(client)
    for data, mentions in UNUSABLE_CSV:
        _refused(client, _csv(client, data), 422, "bad-csv", "file", mentions=mentions, before=before)


BAD_EXAMPLES = [
        ([{"text": "fine", "label": "billing"}, {"text": "bad", "label": "groceries"}],
         "unknown-label", "examples[1].label", ("groceries",)),
        ([{"text": "", "label": "billing"}], "validation", "examples[0].text", ("empty",)),
        ([{"text": "  ", "label": "billing"}], "validation", "examples[0].text", ("empty",)),
        ([{"text": "y" * (MAX_CHARS + 1), "label": "billing"}], "validation", "examples[0].text", (str(MAX_CHARS),)),
        ([], "validation", "examples", ()),
]


def test_bad_json_examples_are_422_naming_the_example(client, task) -> None:
    before = table_counts(client)
    for examples, slug, field, mentions in BAD_EXAMPLES:
        _refused(client, _json(client, examples), 422, slug, field, mentions=mentions, before=before)


def test_json_example_shape_errors_name_the_field_like_other_errors(client, task) -> None:
    """Field paths read `examples[1].text` everywhere (as the unknown-label error writes them)."""
    before = table_counts(client)
    for examples, field in [([{"text": "fine"}], "examples[0].label"),
                            ([{"text": "fine", "label": "billing"}, {"label": "billing"}], "examples[1].text"),
                            ([{"text": "fine", "label": "billing", "weight": 2}], "examples[0].weight")]:
        _refused(client, _json(client, examples), 422, "validation", field, before=before)


def test_json_without_examples_key_is_422(client, task) -> None:
    r = client.post("/v1/tasks/tickets/examples", json={"rows": []})
    _refused(client, r, 422, "validation", "examples", before=table_counts(client))


def test_malformed_json_is_422_malformed_json(client, task) -> None:
    before = table_counts(client)
    r = _csv(client, b'{"examples": [', "application/json")
    body = _refused(client, r, 422, "malformed-json", "body", before=before)
    assert isinstance(body["detail"], str)


def test_unsupported_content_type_is_415(client, task) -> None:
    before = table_counts(client)
    for ctype in ["application/xml", "image/png", "application/x-www-form-urlencoded"]:
        r = _csv(client, "text,label\nfine,billing\n", ctype)
        _refused(client, r, 415, "unsupported-media-type", "Content-Type", mentions=(ctype,), before=before)


def test_multipart_without_file_part_is_422(client, task) -> None:
    before = table_counts(client)
    _refused(client, _upload(client, "text,label\nfine,billing\n", field="data"), 422, "validation", "file",
             before=before)


@pytest.mark.parametrize("send", [_csv, _upload], ids=["body", "multipart"])
def test_upload_over_the_limit_is_413(client, task, send) -> None:
    before = table_counts(client)
    data = "text,label\n" + "a fine text,billing\n" * (MAX_UPLOAD // 10)
    _refused(client, send(client, data), 413, "too-large", None, mentions=(str(MAX_UPLOAD),), before=before)


def test_examples_for_unknown_task_are_404(client, task) -> None:
    before = table_counts(client)
    _refused(client, _csv(client, "text,label\nfine,billing\n", task="nope"), 404, "unknown-task", "task",
             mentions=("nope",), before=before)


def test_text_with_nul_character_is_refused_by_row(client, task) -> None:
    """PostgreSQL text cannot hold NUL; SQLite can. Either way it is bad input, reported by row."""
    before = table_counts(client)
    r = _csv(client, "text,label\nfine,billing\nnul \x00 inside,weather\n")
    body = _refused(client, r, 422, "bad-csv", "text", row=3, before=before)
    assert body["row"] == 3
    r = _json(client, [{"text": "fine", "label": "billing"}, {"text": "nul \x00 inside", "label": "weather"}])
    assert r.status_code == 422 and r.json()["field"] == "examples[1].text", r.text
    assert table_counts(client) == before
