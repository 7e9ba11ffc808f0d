"""`flywheel bench serving` without a server: a data file's shape picks the kind, the kind says
the task its answers make and which parts it can run, and the parts table keeps the CLI's
names in their order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.kinds import KINDS, kind_for_data
from app.tools.bench.parts import NEEDS, PART_NAMES, PARTS, parts_for
from app.tools.datasets import read_records, shape_of

EVERY_PART = {"ceiling", "int8", "http", "swap", "feedback", "naive", "postgres", "trainer"}


def test_the_parts_table_keeps_the_command_line_names_in_order() -> None:
    assert PART_NAMES == ("ceiling", "int8", "http", "swap", "feedback", "naive", "postgres", "trainer")
    assert len(set(PART_NAMES)) == len(PART_NAMES) and set(NEEDS) <= set(PART_NAMES)
    # the parts that use the first server come before those that start their own
    flags = [part.main_server for part in PARTS]
    assert flags == sorted(flags, reverse=True)


def _task_and_parts(path: Path) -> tuple[dict, set[str]]:
    kind = kind_for_data(shape_of(path))
    body = kind.task_from_data([r.value for r in read_records(path)])
    return body, parts_for(kind, set(EVERY_PART))[0]


def test_a_label_file_makes_a_task_over_its_labels_that_runs_every_part(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("text,label\ngreat film,positive\ndull film,negative\nfine film,positive\n", encoding="utf-8")
    body, parts = _task_and_parts(path)
    assert body == {"labels": ["negative", "positive"]}
    assert parts == EVERY_PART


def test_a_score_file_makes_a_task_on_the_whole_numbers_around_its_scores(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("text,score\ngreat,2.6\nawful,-1.2\n", encoding="utf-8")
    body, parts = _task_and_parts(path)
    assert body == {"range": [-2, 3]}
    assert parts == EVERY_PART - {"int8", "trainer"}  # its answers are not one of its labels


def test_a_spans_file_makes_a_task_over_its_entity_types(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    rows = [{"text": "Ada in Paris", "spans": [{"start": 7, "end": 12, "label": "place"},
                                              {"start": 0, "end": 3, "label": "person"}]},
            {"text": "nothing", "spans": []}]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    body, parts = _task_and_parts(path)
    assert body == {"labels": ["person", "place"]}
    assert parts == {"ceiling", "http", "naive", "swap"}  # no accuracy, and a label is not a correction


def test_every_shape_has_one_kind_and_an_unknown_shape_none() -> None:
    shapes = [k.data_shape for k in KINDS.values() if k.data_shape is not None]
    assert sorted(shapes) == ["label", "score", "spans"]
    with pytest.raises(ValueError, match="no task kind"):
        kind_for_data("pairs")
