"""Erasure holds across API processes and commit paths: a prediction or feedback accepted before
its user was erased, still queued in any process (a batcher, the feedback group commit), stores
nothing and answers 409 `user-erased`; a commit and an erasure of one user never interleave; a
returning user's later requests are stored; the erasure records are forgotten once no request
from before them can still be in flight.  Two apps on one database stand for two API processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.db.erasures import CLOCK_SKEW_S, RECORD_TTL
from app.db.tables import Erasure, Feedback, Prediction, utcnow
from app.runs.retention import apply_retention
from app.core.security import hash_user_id, user_namespace
from support.racing import beside, impatient
from support.api import assert_problem, predict, rows

RAW_USER = "alice.7f3c@example.com"
GIVE_UP_S = 60.0


@pytest.fixture
def replica(settings, task) -> Iterator:
    """A second API process on the same database."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from support import ADMIN_TOKEN

    with TestClient(create_app(settings)) as c:
        c.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        yield c


def _in_thread(call) -> tuple[threading.Thread, dict]:
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(r=call()))
    t.start()
    return t, out


def test_a_prediction_queued_in_another_api_process_when_its_user_is_erased_stores_nothing(
        client, replica, monkeypatch) -> None:
    """The replica has the prediction in its micro-batcher (its forward held) while this process
    erases the user: the replica's commit finds the erasure and stores nothing."""
    state = replica.app.state.flywheel
    in_forward, erased = threading.Event(), threading.Event()
    real_forward = state.served.forward

    def held_forward(task_name, texts):
        in_forward.set()
        assert erased.wait(GIVE_UP_S), "the erasure never ran"
        return real_forward(task_name, texts)

    monkeypatch.setattr(state.served, "forward", held_forward)
    predicting, answer = _in_thread(lambda: replica.post("/v1/tasks/tickets/predict",
                                                         json={"text": "queued while erased", "user_id": RAW_USER}))
    assert in_forward.wait(GIVE_UP_S)
    r = client.delete(f"/v1/users/{RAW_USER}")
    erased.set()
    predicting.join(GIVE_UP_S)

    assert r.status_code == 200, r.text
    assert_problem(answer["r"], 409, "user-erased", "user_id", mentions=("erased", "again"))
    assert rows(client, Prediction) == []


def test_feedback_waiting_in_another_process_group_commit_when_its_user_is_erased_stores_nothing(
        client, replica, monkeypatch) -> None:
    import app.services.feedback as feedback

    pid = predict(client, text="someone else's prediction")["predictions"][0]["id"]
    in_commit, erased = threading.Event(), threading.Event()
    real_record = feedback.record_signals

    def held_record(sessions, signals):
        in_commit.set()
        assert erased.wait(GIVE_UP_S), "the erasure never ran"
        return real_record(sessions, signals)

    monkeypatch.setattr(feedback, "record_signals", held_record)
    giving, answer = _in_thread(lambda: replica.post(f"/v1/predictions/{pid}/feedback",
                                                     json={"signal": 1, "user_id": RAW_USER}))
    assert in_commit.wait(GIVE_UP_S)
    r = client.delete(f"/v1/users/{RAW_USER}")
    erased.set()
    giving.join(GIVE_UP_S)

    assert r.status_code == 200, r.text
    assert_problem(answer["r"], 409, "user-erased", "user_id")
    assert rows(client, Feedback) == [] and [p.id for p in rows(client, Prediction)] == [pid]


def test_a_commit_that_checked_before_the_erasure_cannot_store_after_it(db_url: str, client, task, settings,
                                                                       monkeypatch) -> None:
    """The commit has looked for an erasure record (none yet) and is about to insert when the
    erasure runs: the erasure waits for it and deletes its row, or (SQLite, not waiting) is
    refused; an acknowledged erasure never leaves the row behind."""
    import app.services.predictions as predictions
    from app.services.users import _delete_user_rows

    state = client.app.state.flywheel
    user_hash = hash_user_id(RAW_USER, settings.resolved_user_hash_key, user_namespace(None))
    predict(client, text="someone else's, for its task and version")
    [task_row] = rows(client, Prediction)
    real_erased, racing = predictions.erased, {}

    def checked_then_erase(conn, hashes):
        found = real_erased(conn, hashes)
        racing["erasure"] = beside(db_url, lambda: _delete_user_rows(
            impatient(db_url), user_id=RAW_USER, client_id=None, key=settings.resolved_user_hash_key))
        return found

    monkeypatch.setattr(predictions, "erased", checked_then_erase)
    row = {"id": "racing-row", "task_id": task_row.task_id, "model_version_id": task_row.model_version_id,
           "client_id": None, "user_hash": user_hash, "text": "racing", "label": task_row.label,
           "scores": task_row.scores, "created_at": utcnow()}
    assert predictions._insert(state.sessions, [row], accepted={"racing-row": utcnow()}) == {}

    outcome = racing["erasure"].outcome()
    left = [p.id for p in rows(client, Prediction, Prediction.user_hash == user_hash)]
    if isinstance(outcome, Exception):  # refused (SQLite's write lock was held): nothing was erased
        assert left == ["racing-row"]
    else:
        assert left == [] and outcome["deleted_predictions"] == 1, outcome


def test_a_returning_user_is_stored_as_new_data(client, task) -> None:
    pid = predict(client, text="before", user_id=RAW_USER)["predictions"][0]["id"]
    assert client.post(f"/v1/predictions/{pid}/feedback", json={"signal": 1, "user_id": RAW_USER}).status_code == 201
    assert client.delete(f"/v1/users/{RAW_USER}").json() == {"deleted_predictions": 1, "deleted_feedback": 1}
    with client.app.state.flywheel.sessions.begin() as s:  # the erasure was a while ago
        record = s.query(Erasure).one()
        record.erased_at -= timedelta(seconds=CLOCK_SKEW_S + 1)

    again = predict(client, text="after", user_id=RAW_USER)["predictions"][0]["id"]
    r = client.post(f"/v1/predictions/{again}/feedback", json={"signal": -1, "user_id": RAW_USER})
    assert r.status_code == 201, r.text
    assert [p.text for p in rows(client, Prediction)] == ["after"] and len(rows(client, Feedback)) == 1


def test_erasure_records_are_forgotten_once_nothing_from_before_them_can_be_in_flight(client, task, settings
                                                                                     ) -> None:
    client.delete(f"/v1/users/{RAW_USER}")
    client.delete("/v1/users/bob")
    with client.app.state.flywheel.sessions.begin() as s:
        s.execute(update(Erasure).where(Erasure.id == 1).values(erased_at=utcnow() - RECORD_TTL - timedelta(hours=1)))
    report = apply_retention(client.app.state.flywheel.sessions, settings.models_dir, keep_versions=5,
                             rejected_days=7, prediction_days=0)
    assert report.forgotten_erasures == 1
    assert [e.user_hash for e in rows(client, Erasure)] == [
        hash_user_id("bob", settings.resolved_user_hash_key, user_namespace(None))]
