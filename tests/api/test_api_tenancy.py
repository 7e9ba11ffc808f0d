"""Tenancy: a client key is scoped to its tasks and to what it may do there.  Another team's
task, and everything under it, answers as if it did not exist (404); a scope the key lacks is
a 403; admin routes are 403 to every key.  Nothing changes on a refused call."""

from __future__ import annotations

import pytest

from app.db.tables import Feedback, Prediction
from support.api import assert_problem, create_task, predict, rows, table_counts


def _key(client, name: str, tasks: list[str], scopes: list[str] | None = None) -> dict[str, str]:
    body = {"name": name, "tasks": tasks, **({"scopes": scopes} if scopes else {})}
    r = client.post("/v1/clients", json=body)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}", "id": str(r.json()["id"])}


def _h(key: dict[str, str]) -> dict[str, str]:
    return {"Authorization": key["Authorization"]}


@pytest.fixture
def two_teams(client) -> dict:
    """Team A owns `tickets`, team B owns `moods`; each has a prediction with feedback on it."""
    create_task(client, "tickets")
    create_task(client, "moods", labels=["happy", "sad"])
    a, b = _key(client, "team-a", ["tickets"]), _key(client, "team-b", ["moods"])
    pa = predict(client, "tickets", headers=_h(a), text="my card is gone")["predictions"][0]["id"]
    pb = predict(client, "moods", headers=_h(b), text="what a day")["predictions"][0]["id"]
    assert client.post(f"/v1/predictions/{pb}/feedback", json={"signal": 1}, headers=_h(b)).status_code == 201
    run = client.post("/v1/tasks/moods/retrain").json()["run_id"]
    return {"a": a, "b": b, "pa": pa, "pb": pb, "run": run}


def test_a_key_lists_and_reads_only_its_own_tasks(client, two_teams) -> None:
    a = _h(two_teams["a"])
    assert [t["name"] for t in client.get("/v1/tasks", headers=a).json()] == ["tickets"]
    assert client.get("/v1/tasks/tickets", headers=a).status_code == 200
    assert [t["name"] for t in client.get("/v1/tasks").json()] == ["tickets", "moods"]  # the admin sees all


def test_another_teams_task_is_404_on_every_route_and_changes_nothing(client, two_teams) -> None:
    """The 404 is the same as for a task that does not exist, so a key cannot probe for names."""
    a = _h(two_teams["a"])
    before = table_counts(client)
    client_calls = [
        ("GET", "/v1/tasks/moods", None),
        ("POST", "/v1/tasks/moods/predict", {"text": "let me in"}),
        ("GET", "/v1/tasks/moods/review", None),
    ]
    for method, path, body in client_calls:
        theirs = client.request(method, path, json=body, headers=a)
        missing = client.request(method, path.replace("moods", "nosuchtask"), json=body, headers=a)
        assert_problem(theirs, 404, "unknown-task", "task")
        assert theirs.json()["detail"].replace("moods", "X") == missing.json()["detail"].replace("nosuchtask", "X")
    r = client.post(f"/v1/predictions/{two_teams['pb']}/feedback", json={"signal": -1}, headers=a)
    assert_problem(r, 404, "unknown-prediction", "prediction_id")
    r = client.post(f"/v1/predictions/{two_teams['pb']}/feedback", json={"signal": -1, "correction": "sad"}, headers=a)
    assert_problem(r, 404, "unknown-prediction", "prediction_id")
    admin_calls = [
        ("POST", "/v1/tasks/moods/retrain", None), ("GET", "/v1/tasks/moods/runs", None),
        ("GET", "/v1/tasks/moods/models", None), ("POST", "/v1/tasks/moods/models/0/activate", None),
        ("POST", "/v1/tasks/moods/examples", {"examples": [{"text": "t", "label": "sad"}]}),
        ("GET", f"/v1/runs/{two_teams['run']}", None), ("POST", f"/v1/runs/{two_teams['run']}/cancel", None),
        ("DELETE", f"/v1/clients/{two_teams['b']['id']}", None), ("GET", "/v1/clients", None),
        ("DELETE", "/v1/users/someone", None),
    ]
    for method, path, body in admin_calls:
        assert_problem(client.request(method, path, json=body, headers=a), 403, "forbidden", "Authorization")
    assert table_counts(client) == before
    assert client.get(f"/v1/runs/{two_teams['run']}").json()["status"] == "queued"


@pytest.mark.parametrize("scope, call", [
    ("predict", ("POST", "/v1/tasks/tickets/predict", {"text": "hello"})),
    ("read", ("GET", "/v1/tasks/tickets", None)),
    ("read", ("GET", "/v1/tasks", None)),
    ("read", ("GET", "/v1/tasks/tickets/review", None)),
])
def test_a_key_without_the_scope_is_403_on_its_own_task(client, scope: str, call) -> None:
    create_task(client, "tickets")
    others = [s for s in ("predict", "feedback", "read") if s != scope]
    k = _key(client, "narrow", ["tickets"], others)
    before = table_counts(client)
    method, path, body = call
    r = client.request(method, path, json=body, headers=_h(k))
    assert_problem(r, 403, "missing-scope", "Authorization", mentions=(scope,))
    assert table_counts(client) == before


def test_a_key_without_feedback_scope_may_predict_but_not_give_feedback(client) -> None:
    create_task(client, "tickets")
    k = _h(_key(client, "predict-only", ["tickets"], ["predict"]))
    pid = predict(client, "tickets", headers=k, text="hello")["predictions"][0]["id"]
    r = client.post(f"/v1/predictions/{pid}/feedback", json={"signal": 1}, headers=k)
    assert_problem(r, 403, "missing-scope", "Authorization", mentions=("feedback",))
    assert rows(client, Feedback) == []


def test_a_key_for_two_tasks_uses_both(client) -> None:
    create_task(client, "tickets")
    create_task(client, "moods", labels=["happy", "sad"])
    k = _h(_key(client, "both", ["tickets", "moods"]))
    for task in ("tickets", "moods"):
        predict(client, task, headers=k, text="hello")
    assert sorted(t["name"] for t in client.get("/v1/tasks", headers=k).json()) == ["moods", "tickets"]


def test_revoking_with_purge_drops_the_keys_feedback_from_training_and_says_how_much(client, two_teams) -> None:
    a = two_teams["a"]
    pids = [p["id"] for p in predict(client, "tickets", headers=_h(a), texts=["x", "y", "z"])["predictions"]]
    for pid in pids:
        assert client.post(f"/v1/predictions/{pid}/feedback", json={"signal": -1}, headers=_h(a)).status_code == 201
    other = len(rows(client, Feedback))
    r = client.delete(f"/v1/clients/{a['id']}", params={"purge": "true"})
    assert r.status_code == 200 and r.json()["purged_feedback"] == 3
    assert len(rows(client, Feedback)) == other - 3
    assert rows(client, Feedback, Feedback.client_id == int(a["id"])) == []
    assert len(rows(client, Prediction, Prediction.client_id == int(a["id"]))) == 4  # predictions stay
    assert client.get("/v1/tasks/tickets").json()["counts"]["feedback"]["total"] == 0
    assert_problem(client.get("/v1/tasks", headers=_h(a)), 401, "unauthorized", "Authorization")


def test_a_bad_purge_flag_is_422_and_revokes_nothing(client, two_teams) -> None:
    r = client.delete(f"/v1/clients/{two_teams['a']['id']}", params={"purge": "maybe"})
    assert_problem(r, 422, "validation", "query.purge")
    assert client.get("/v1/tasks", headers=_h(two_teams["a"])).status_code == 200
