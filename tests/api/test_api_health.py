"""/healthz, /readyz, /metrics, /docs, /openapi.json; the registry and runs read-only endpoints;
and problem documents for routes and methods that do not exist."""

from __future__ import annotations



import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from app.main import create_app
from support import ADMIN, make_settings
from support.api import assert_problem, create_task, metric, predict, table_counts

METRICS_TOKEN = "metrics-token-0123456789abcdef-0123"




# ---------------------------------------------------------------- health


def test_healthz_needs_no_token(client) -> None:
    del client.headers["Authorization"]
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_lists_loaded_models(client) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready", "models": {}, "engines": {}, "unloadable": {}}
    create_task(client)
    assert client.get("/readyz").json() == {"status": "ready", "models": {"tickets": 0},
                                            "engines": {"tickets": "torch-fp32"}, "unloadable": {}}


@pytest.fixture
def guarded(tmp_path, db_url, tiny_model_dir):
    """An app with an admin token and a metrics token, as deployed; no Authorization by default."""
    settings = make_settings(tmp_path / "data", db_url, tiny_model_dir, metrics_token=METRICS_TOKEN)
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/tasks", json={"name": "tickets", "labels": ["a", "b"]}, headers=ADMIN).status_code == 201
        yield c


def test_metrics_and_readyz_details_need_the_metrics_or_admin_token(guarded) -> None:
    """They name every tenant's tasks: a stranger, or a client key, gets 401 from /metrics and
    only the status from /readyz (enough for a probe); the two tokens get everything."""
    key = guarded.post("/v1/clients", json={"name": "team", "tasks": ["tickets"]}, headers=ADMIN).json()["key"]
    for headers in ({}, {"Authorization": f"Bearer {key}"}, {"Authorization": "Bearer not-the-token"},
                    {"Authorization": f"Basic {METRICS_TOKEN}"}):
        r = guarded.get("/metrics", headers=headers)
        assert_problem(r, 401, "unauthorized", "Authorization", mentions=("FLYWHEEL_METRICS_TOKEN",))
        assert r.headers["www-authenticate"] == "Bearer" and "tickets" not in r.text
        r = guarded.get("/readyz", headers=headers)
        assert r.status_code == 200 and r.json() == {"status": "ready"}
    assert guarded.get("/healthz").json() == {"status": "ok"}
    for token in (METRICS_TOKEN, ADMIN["Authorization"].removeprefix("Bearer ")):
        r = guarded.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and metric(r.text, "flywheel_active_version", task="tickets") == 0
        assert guarded.get("/readyz", headers={"Authorization": f"Bearer {token}"}).json()["models"] == {"tickets": 0}


def test_a_stranger_is_told_not_ready_without_the_tasks_it_is_about(guarded, monkeypatch) -> None:
    # The registry reports no model loaded (taking the model out instead races the watcher, which
    # loads it back within its 0.1 s poll).
    monkeypatch.setattr(guarded.app.state.flywheel.served, "loaded", dict)
    anonymous = guarded.get("/readyz")
    operator = guarded.get("/readyz", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert_problem(anonymous, 503, "not-ready", None)
    assert "tickets" not in anonymous.text and anonymous.headers["retry-after"] == "1"
    assert_problem(operator, 503, "not-ready", None, mentions=("tickets",))


@pytest.mark.parametrize("how", ["open_metrics", "development_mode"])
def test_metrics_are_open_when_the_operator_says_so_or_in_development_mode(how, tmp_path, sqlite_url,
                                                                          tiny_model_dir) -> None:
    overrides = {"open_metrics": True} if how == "open_metrics" else {"admin_token": None}
    settings = make_settings(tmp_path / "data", sqlite_url, tiny_model_dir, **overrides)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000)) as c:
        c.headers.update(ADMIN if how == "open_metrics" else {})
        assert c.post("/v1/tasks", json={"name": "tickets", "labels": ["a", "b"]}).status_code == 201
        c.headers.pop("Authorization", None)
        r = c.get("/metrics")
        assert r.status_code == 200 and metric(r.text, "flywheel_active_version", task="tickets") == 0
        assert c.get("/readyz").json()["models"] == {"tickets": 0}


def test_readyz_is_503_when_the_database_is_unreachable(client) -> None:
    state = client.app.state.flywheel

    def broken():
        raise ConnectionError("database is down")

    good: sessionmaker = state.sessions
    state.sessions = broken
    try:
        r = client.get("/readyz")
    finally:
        state.sessions = good
    assert_problem(r, 503, "not-ready", None, mentions=("database",))
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_while_a_model_is_not_loaded(client) -> None:
    create_task(client)
    registry = client.app.state.flywheel.served
    loaded = registry._models.pop("tickets")
    try:
        r = client.get("/readyz")
    finally:
        registry._models["tickets"] = loaded
    assert_problem(r, 503, "not-ready", None, mentions=("tickets",))
    assert r.headers["retry-after"] == "1"


# ---------------------------------------------------------------- metrics


def test_metrics_exposes_flywheel_metrics(client) -> None:
    create_task(client)
    predict(client, texts=["a", "b", "c"])
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("flywheel_request_seconds", "flywheel_batch_texts", "flywheel_queue_texts",
                 "flywheel_predictions_total", "flywheel_feedback_total", "flywheel_model_version",
                 "flywheel_model_swaps_total", "flywheel_training_runs", "flywheel_active_version"):
        assert f"# HELP {name}" in text, name
    assert metric(text, "flywheel_predictions_total", task="tickets") == 3
    assert metric(text, "flywheel_model_version", task="tickets") == 0
    assert metric(text, "flywheel_active_version", task="tickets") == 0
    assert metric(text, "flywheel_batch_texts_count", task="tickets") >= 1
    assert metric(text, "flywheel_request_seconds_count", method="POST", route="/v1/tasks/{task}/predict",
                   status="200") == 1


def test_feedback_counter_increments_per_signal(client) -> None:
    create_task(client)
    ids = [p["id"] for p in predict(client, texts=["a", "b", "c"])["predictions"]]
    shown = predict(client, text="d")["predictions"][0]

    def count(signal: str) -> float:
        return metric(client.get("/metrics").text, "flywheel_feedback_total", task="tickets", signal=signal) or 0.0

    assert count("1") == 0
    assert client.post(f"/v1/predictions/{ids[0]}/feedback", json={"signal": 1}).status_code == 201
    assert count("1") == 1
    assert client.post(f"/v1/predictions/{ids[1]}/feedback", json={"signal": 1}).status_code == 201
    assert client.post(f"/v1/predictions/{ids[2]}/feedback", json={"signal": -1}).status_code == 201
    other = next(lab for lab in ("billing", "card_lost", "weather") if lab != shown["label"])
    r = client.post(f"/v1/predictions/{shown['id']}/feedback", json={"signal": -1, "correction": other})
    assert r.status_code == 201
    assert (count("1"), count("-1"), count("correction")) == (2, 1, 1)
    # a refused signal counts nothing
    client.post(f"/v1/predictions/{ids[0]}/feedback", json={"signal": 0})
    assert count("1") == 2


# ---------------------------------------------------------------- docs and schema


def test_docs_page_is_served(client) -> None:
    del client.headers["Authorization"]
    r = client.get("/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "swagger" in r.text.lower() and "/openapi.json" in r.text


def test_openapi_lists_every_v1_route(client) -> None:
    del client.headers["Authorization"]
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["info"]["title"] == "Flywheel"
    paths = spec["paths"]
    expected = {
        "/healthz": {"get"}, "/readyz": {"get"},
        "/v1/tasks": {"get", "post"}, "/v1/tasks/{task}": {"get"},
        "/v1/tasks/{task}/predict": {"post"}, "/v1/predictions/{prediction_id}/feedback": {"post"},
        "/v1/tasks/{task}/examples": {"post"}, "/v1/runs/{run_id}": {"get"}, "/v1/tasks/{task}/runs": {"get"},
        "/v1/tasks/{task}/models": {"get"}, "/v1/tasks/{task}/models/{version}/activate": {"post"},
        "/v1/clients": {"get", "post"}, "/v1/clients/{client_id}": {"delete"}, "/v1/users/{user_id}": {"delete"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    upload = paths["/v1/tasks/{task}/examples"]["post"]["requestBody"]["content"]
    assert {"application/json", "text/csv", "multipart/form-data"} <= set(upload)


# ---------------------------------------------------------------- registry and runs (read side)


def test_models_lists_versions_and_activate_reactivates(client) -> None:
    create_task(client)
    [v0] = client.get("/v1/tasks/tickets/models").json()
    assert v0["version"] == 0 and v0["status"] == "active" and v0["training_run_id"] is None
    r = client.post("/v1/tasks/tickets/models/0/activate")
    assert r.status_code == 200 and r.json()["status"] == "active" and r.json()["id"] == v0["id"]


def test_activating_unknown_version_is_404_and_changes_nothing(client) -> None:
    create_task(client)
    before = client.get("/v1/tasks/tickets/models").json()
    assert_problem(client.post("/v1/tasks/tickets/models/7/activate"), 404, "unknown-version", "version",
                   mentions=("7",))
    assert client.get("/v1/tasks/tickets/models").json() == before


@pytest.mark.parametrize("path", ["/v1/tasks/nope/models", "/v1/tasks/nope/runs"])
def test_registry_of_unknown_task_is_404(client, path: str) -> None:
    assert_problem(client.get(path), 404, "unknown-task", "task")
    assert_problem(client.post("/v1/tasks/nope/models/0/activate"), 404, "unknown-task", "task")


def test_runs_of_a_new_task_is_empty_and_unknown_run_is_404(client) -> None:
    create_task(client)
    r = client.get("/v1/tasks/tickets/runs")
    assert r.status_code == 200 and r.json() == []
    assert_problem(client.get("/v1/runs/12345"), 404, "unknown-run", "run_id", mentions=("12345",))


def test_non_integer_path_parameter_is_422_problem(client) -> None:
    r = client.get("/v1/runs/abc")
    body = assert_problem(r, 422, "validation", None)
    assert "run_id" in body["field"]


# ---------------------------------------------------------------- routing errors are problems too


def test_unknown_route_is_404_problem(client) -> None:
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith(":not-found") and body["status"] == 404 and body["instance"] == "/v2/nothing"


def test_wrong_method_is_405_problem(client) -> None:
    before = table_counts(client)
    assert_problem(client.put("/v1/tasks"), 405, "method-not-allowed", None)
    assert table_counts(client) == before


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_load_every_asset_from_this_server(client, page: str) -> None:
    """Flywheel runs offline: a docs page that loads Swagger UI from a CDN is blank there."""
    import re

    html = client.get(page).text
    refs = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: ?'([^']+)'", html)
    assert refs and not [r for r in refs if "://" in r or r.startswith("//")], refs
    assets = [r for r in refs if r.endswith((".js", ".css"))]
    assert assets
    for ref in assets:
        assert client.get(ref).status_code == 200, ref
