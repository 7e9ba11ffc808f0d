"""The one data-set reader (`app/tools/datasets.py`): each shape read from files made here, the
rows it skips, and the errors that name the file and the row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.tools.datasets import LABEL, SCORE, SPANS, DataError, Record, find_shared, read_records, shape_of
from support import SHARED_DATA


def test_a_label_file_keeps_labels_as_written_and_skips_blank_rows(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("text,label,source\n  hello there ,greeting,x\n,bank,x\nno answer,,x\n\"a, b\",bank,y\n",
                    encoding="utf-8")
    assert shape_of(path) == LABEL
    assert read_records(path) == [Record("hello there", "greeting"), Record("a, b", "bank")]


def test_a_score_file_gives_numbers_and_a_label_column_wins(tmp_path: Path) -> None:
    scores = tmp_path / "scores.csv"
    scores.write_text("text,score\ngood,2.5\nbad,-1\n", encoding="utf-8")
    assert shape_of(scores) == SCORE
    assert read_records(scores) == [Record("good", 2.5), Record("bad", -1.0)]
    both = tmp_path / "both.csv"
    both.write_text("text,score,label\ngood,2.5,up\n", encoding="utf-8")
    assert shape_of(both) == LABEL and read_records(both) == [Record("good", "up")]


def test_a_spans_file_keeps_its_text_and_sorts_the_spans(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    lines = [{"text": " Paris and Rome ", "spans": [{"start": 11, "end": 15, "label": "city"},
                                                    {"start": 1, "end": 6, "label": "city"}]},
             {"text": "   ", "spans": []},
             {"text": "nothing here", "spans": []}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    assert shape_of(path) == SPANS
    rows = read_records(path)
    assert rows == [Record(" Paris and Rome ", [{"start": 1, "end": 6, "label": "city"},
                                                {"start": 11, "end": 15, "label": "city"}]),
                    Record("nothing here", [])]
    assert rows[0].text[1:6] == "Paris"


@pytest.mark.parametrize(("name", "content", "message"), [
    ("header.csv", "sentence,label\nhello,bank\n", "text,label or text,score"),
    ("score.csv", "text,score\nfine,2\nfine,high\n", "row 3: score 'high' is not a number"),
    ("empty.csv", "text,label\n,\n", "no rows"),
    ("bad.jsonl", '{"text": "a", "spans": []}\n{"text": "b"}\n', "line 2: not a {text, spans} object"),
])
def test_a_file_that_does_not_fit_says_where(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message.replace("{", r"\{").replace("}", r"\}")):
        read_records(path)


def test_a_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "absent.csv")
    assert find_shared("no-such-set", "absent.csv") is None


@pytest.mark.skipif(not (SHARED_DATA / "sst2" / "dev.csv").is_file(), reason="../shared/data is not beside the project")
def test_the_shared_files_read_in_their_shapes() -> None:
    assert find_shared("sst2", "dev.csv") == SHARED_DATA / "sst2" / "dev.csv"
    sst2 = read_records(SHARED_DATA / "sst2" / "dev.csv")
    assert len(sst2) == 872 and {r.value for r in sst2} == {"negative", "positive"}
    for folder, name, shape in (("vader", "test.csv", SCORE), ("wnut16", "test.jsonl", SPANS)):
        if (SHARED_DATA / folder / name).is_file():
            assert shape_of(SHARED_DATA / folder / name) == shape and read_records(SHARED_DATA / folder / name)
