"""POST/GET /v1/tasks and GET /v1/tasks/{task}: creation with a zero-shot version 0, the
description with its counts, and every way a task definition can be wrong.

The helpers the HTTP tests share (`create_task`, `predict`, `assert_problem`, `table_counts`,
`rows`) are in tests/support/api.py."""

from __future__ import annotations

from pathlib import Path

from app.core.texts import split_for
from app.db.tables import ModelVersion
from support.api import LABELS, TABLES, assert_problem, create_task, predict, rows, table_counts

# ---------------------------------------------------------------- creating and describing


def test_create_task_builds_active_zero_shot_version_zero(client) -> None:
    body = create_task(client, "tickets", descriptions={"card_lost": "the customer lost a card"})
    assert body["name"] == "tickets"
    assert body["kind"] == "classification"
    assert body["labels"] == LABELS
    assert body["descriptions"] == {"card_lost": "the customer lost a card"}
    assert body["lambda"] == 0.5 and body["feedback_loss"] == "corrected" and body["finetune"] == "full"
    v0 = body["active_version"]
    assert v0["version"] == 0 and v0["status"] == "active" and v0["parent_id"] is None
    assert len(v0["sha256"]) == 64 and v0["metrics"] == {"zero_shot": True}
    assert body["counts"] == {
        "predictions": 0,
        "feedback": {"positive": 0, "negative": 0, "corrections": 0, "total": 0},
        "examples": {"train": 0, "validation": 0, "total": 0},
    }
    [stored] = rows(client, ModelVersion)
    assert stored.status == "active" and Path(stored.path).is_dir()


def test_create_task_keeps_lambda_losses_and_policy(client) -> None:
    body = create_task(client, "reviews", labels=["pos", "neg"], feedback_loss="signed", finetune="lora",
                       policy={"min_new_signals": 10, "epochs": 2}, **{"lambda": 0.8})
    assert body["lambda"] == 0.8 and body["feedback_loss"] == "signed" and body["finetune"] == "lora"
    assert body["policy"]["min_new_signals"] == 10 and body["policy"]["epochs"] == 2
    again = client.get("/v1/tasks/reviews").json()
    assert again["lambda"] == 0.8 and again["policy"] == body["policy"]


def test_labels_are_trimmed(client) -> None:
    assert create_task(client, "trim", labels=[" yes ", "no"])["labels"] == ["yes", "no"]


def test_list_tasks_in_creation_order(client) -> None:
    assert client.get("/v1/tasks").json() == []
    create_task(client, "first", labels=["a", "b"])
    create_task(client, "second", labels=["c", "d"])
    listed = client.get("/v1/tasks").json()
    assert [t["name"] for t in listed] == ["first", "second"]
    assert all(t["active_version"]["version"] == 0 for t in listed)


def test_get_task_counts_predictions_feedback_and_examples(client) -> None:
    create_task(client)
    preds = predict(client, texts=["lost my card", "rain tomorrow", "charged twice", "hello"])["predictions"]
    shown = {p["id"]: p["label"] for p in preds}
    ids = list(shown)
    other = next(lab for lab in LABELS if lab != shown[ids[2]])
    for pid, fb in [(ids[0], {"signal": 1}), (ids[1], {"signal": -1}),
                    (ids[2], {"signal": -1, "correction": other}), (ids[3], {"signal": 1})]:
        assert client.post(f"/v1/predictions/{pid}/feedback", json=fb).status_code == 201
    texts = [f"example text number {i}" for i in range(20)]
    r = client.post("/v1/tasks/tickets/examples",
                    json={"examples": [{"text": t, "label": LABELS[i % 3]} for i, t in enumerate(texts)]})
    assert r.status_code == 201, r.text
    n_val = sum(split_for(t) == "validation" for t in texts)
    assert 0 < n_val < len(texts)  # these texts land on both sides

    counts = client.get("/v1/tasks/tickets").json()["counts"]
    assert counts == {
        "predictions": 4,
        "feedback": {"positive": 2, "negative": 2, "corrections": 1, "total": 4},
        "examples": {"train": len(texts) - n_val, "validation": n_val, "total": len(texts)},
    }


def test_counts_belong_to_their_task(client) -> None:
    create_task(client, "one", labels=["a", "b"])
    create_task(client, "two", labels=["a", "b"])
    predict(client, "one", texts=["x", "y"])
    assert client.get("/v1/tasks/one").json()["counts"]["predictions"] == 2
    assert client.get("/v1/tasks/two").json()["counts"]["predictions"] == 0


def test_unknown_task_is_404(client) -> None:
    assert_problem(client.get("/v1/tasks/nope"), 404, "unknown-task", "task", mentions=("nope",))


# ---------------------------------------------------------------- bad task definitions


def test_duplicate_task_name_is_409_and_builds_nothing(client, settings) -> None:
    create_task(client, "tickets")
    before = table_counts(client)
    versions_on_disk = sorted(p.name for p in (settings.models_dir / "tickets").iterdir())
    r = client.post("/v1/tasks", json={"name": "tickets", "labels": ["x", "y"]})
    assert_problem(r, 409, "duplicate-task", "name", mentions=("tickets",))
    assert table_counts(client) == before
    assert sorted(p.name for p in (settings.models_dir / "tickets").iterdir()) == versions_on_disk
    assert client.get("/v1/tasks/tickets").json()["labels"] == LABELS


BAD_NAMES = ["Tickets", "my tasks", "a/b", "-lead", "_lead", "é", "", "x" * 65, "a.b"]


def test_task_name_with_bad_characters_is_422(client) -> None:
    for name in BAD_NAMES:
        r = client.post("/v1/tasks", json={"name": name, "labels": ["a", "b"]})
        assert_problem(r, 422, "validation", "name")
    assert table_counts(client)["tasks"] == 0


BAD_LABELS = [
    (["a", "b", "a"], ("unique", "a")),
    (["a", " a "], ("unique",)),  # the same label once trimmed
    (["only"], ("2",)),
    ([], ("2",)),
    (["a", ""], ("label 1",)),
    (["a", "   "], ("label 1",)),
    (["a", "x" * 129], ("128",)),
]


def test_bad_label_sets_are_422_naming_labels(client) -> None:
    for labels, mentions in BAD_LABELS:
        r = client.post("/v1/tasks", json={"name": "t", "labels": labels})
        assert_problem(r, 422, "validation", "labels", mentions=mentions)
    assert table_counts(client) == {m.__tablename__: 0 for m in TABLES}


BAD_FIELDS = [
    ({"kind": "translation"}, "kind"),
    ({"lambda": 1.5}, "lambda"),
    ({"lambda": "lots"}, "lambda"),
    ({"feedback_loss": "hinge"}, "feedback_loss"),
    ({"finetune": "adapter"}, "finetune"),
    ({"policy": {"epochs": 0}}, "policy.epochs"),
    ({"policy": {"unknown_knob": 1}}, "policy.unknown_knob"),
    ({"lables": ["a", "b"]}, "lables"),
]


def test_bad_task_fields_are_422_naming_the_field(client) -> None:
    for extra, field in BAD_FIELDS:
        r = client.post("/v1/tasks", json={"name": "t", "labels": ["a", "b"], **extra})
        assert_problem(r, 422, "validation", field)
    assert table_counts(client)["tasks"] == 0


def test_description_of_unknown_label_is_422_naming_descriptions(client) -> None:
    """Which field is wrong is `descriptions` (not the whole body)."""
    r = client.post("/v1/tasks", json={"name": "t", "labels": ["a", "b"], "descriptions": {"c": "no such label"}})
    assert_problem(r, 422, "validation", "descriptions", mentions=("c",))
    assert table_counts(client)["tasks"] == 0


def test_missing_labels_is_422(client) -> None:
    assert_problem(client.post("/v1/tasks", json={"name": "t"}), 422, "validation", "labels")


def test_malformed_json_is_problem_not_fastapi_default(client) -> None:
    r = client.post("/v1/tasks", content=b'{"name": "t", "labels": ["a", "b"]',
                    headers={"content-type": "application/json"})
    body = assert_problem(r, 422, "malformed-json", "body", mentions=("json",))
    assert not isinstance(body["detail"], list)
    assert table_counts(client)["tasks"] == 0
