"""Who may call what: the admin token, client API keys (created once, stored hashed, revoked),
401 and 403 as problem documents, and dev mode when no admin token is configured."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import inspect

from app.core.config import Settings
from app.db.tables import Client, Prediction
from app.main import create_app
from support import ADMIN_TOKEN, make_settings
from support.api import assert_problem, create_task, predict, rows, table_counts

ROOT = Path(__file__).resolve().parents[2]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _new_key(client, name: str = "app") -> dict:
    r = client.post("/v1/clients", json={"name": name, "tasks": ["tickets"]})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def key(client, task) -> dict:
    return _new_key(client)


# (method, path, json body) of every admin-only call, with bodies that would succeed as admin
ADMIN_CALLS = [
    ("POST", "/v1/tasks", {"name": "other", "labels": ["a", "b"]}),
    ("POST", "/v1/tasks/tickets/examples", {"examples": [{"text": "t", "label": "billing"}]}),
    ("GET", "/v1/tasks/tickets/models", None),
    ("POST", "/v1/tasks/tickets/models/0/activate", None),
    ("GET", "/v1/tasks/tickets/runs", None),
    ("GET", "/v1/runs/1", None),
    ("POST", "/v1/clients", {"name": "sneaky", "tasks": ["tickets"]}),
    ("GET", "/v1/clients", None),
    ("DELETE", "/v1/clients/1", None),
    ("DELETE", "/v1/users/someone", None),
]
CLIENT_CALLS = [
    ("GET", "/v1/tasks", None),
    ("GET", "/v1/tasks/tickets", None),
    ("POST", "/v1/tasks/tickets/predict", {"text": "hello"}),
    ("POST", "/v1/predictions/0123/feedback", {"signal": 1}),
]


def _call(client, method: str, path: str, body: dict | None, headers: dict | None = None):
    return client.request(method, path, json=body, headers=headers)


# ---------------------------------------------------------------- 401


def test_missing_token_is_401_on_every_route(client, task) -> None:
    del client.headers["Authorization"]
    before = table_counts(client)
    for method, path, body in ADMIN_CALLS + CLIENT_CALLS:
        r = _call(client, method, path, body)
        assert_problem(r, 401, "unauthorized", "Authorization", mentions=("bearer",))
        assert r.headers["www-authenticate"] == "Bearer", (method, path)
    assert table_counts(client) == before


WRONG_HEADERS = ["Bearer wrong-token", f"Bearer {ADMIN_TOKEN}x", f"Basic {ADMIN_TOKEN}", f"bearer{ADMIN_TOKEN}",
                 "Bearer ", "Bearer fw_not-a-real-key", ADMIN_TOKEN]


def test_wrong_token_is_401(client, task) -> None:
    before = table_counts(client)
    for header in WRONG_HEADERS:
        for method, path, body in (ADMIN_CALLS[0], CLIENT_CALLS[2]):
            r = _call(client, method, path, body, headers={"Authorization": header})
            assert_problem(r, 401, "unauthorized", "Authorization")
            assert r.headers["www-authenticate"] == "Bearer", header
    assert table_counts(client) == before


def test_bearer_scheme_is_case_insensitive(client, task) -> None:
    r = client.get("/v1/tasks", headers={"Authorization": f"bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200


# ---------------------------------------------------------------- client keys


def test_client_key_is_shown_once_and_stored_as_a_hash(client, task) -> None:
    created = _new_key(client, "support-app")
    k = created["key"]
    assert k.startswith("fw_") and len(k) > 40
    assert created["name"] == "support-app" and created["key_prefix"] == k[:10]
    assert created["revoked_at"] is None and created["id"] >= 1
    assert created["tasks"] == ["tickets"] and created["scopes"] == ["predict", "feedback", "read"]
    listed = client.get("/v1/clients").json()
    assert listed == [{kk: v for kk, v in created.items() if kk != "key"}]
    [row] = rows(client, Client)
    assert row.key_hash == hashlib.sha256(k.encode()).hexdigest()
    stored = [str(getattr(row, c.key)) for c in inspect(Client).column_attrs]
    assert not any(k in v for v in stored)


def test_every_client_gets_its_own_key(client, task) -> None:
    a, b = _new_key(client, "a"), _new_key(client, "b")
    assert a["key"] != b["key"] and a["id"] != b["id"]
    assert [c["name"] for c in client.get("/v1/clients").json()] == ["a", "b"]


def test_bad_client_body_is_422(client, task) -> None:
    ok = {"name": "a", "tasks": ["tickets"]}
    for body, field in [({**ok, "name": ""}, "name"), ({"tasks": ["tickets"]}, "name"), ({**ok, "name": "x" * 129}, "name"),
                        ({**ok, "key": "mine"}, "key"), ({"name": "a"}, "tasks"), ({**ok, "tasks": []}, "tasks"),
                        ({**ok, "tasks": ["Not A Name"]}, "tasks[0]"), ({**ok, "scopes": ["admin"]}, "scopes[0]"),
                        ({**ok, "scopes": []}, "scopes")]:
        assert_problem(client.post("/v1/clients", json=body), 422, "validation", field)
    assert table_counts(client)["clients"] == 0


def test_a_key_for_a_task_that_does_not_exist_is_refused(client, task) -> None:
    r = client.post("/v1/clients", json={"name": "a", "tasks": ["tickets", "nope"]})
    assert_problem(r, 422, "unknown-task", "tasks", mentions=("nope",))
    assert table_counts(client)["clients"] == 0


def test_client_name_with_nul_character_is_422_on_every_database(client, task) -> None:
    """PostgreSQL refuses NUL in text columns (a 500 today); SQLite stores it. Bad input either way."""
    r = client.post("/v1/clients", json={"name": "bad\u0000name", "tasks": ["tickets"]})
    assert r.status_code == 422 and r.json()["field"] == "name", r.text
    assert table_counts(client)["clients"] == 0


def test_client_key_may_give_feedback_on_its_prediction(client, task, key) -> None:
    pid = predict(client, text="hello", headers=_bearer(key["key"]))["predictions"][0]["id"]
    r = client.post(f"/v1/predictions/{pid}/feedback", json={"signal": 1}, headers=_bearer(key["key"]))
    assert r.status_code == 201


def test_client_key_on_any_admin_route_is_403(client, task, key) -> None:
    before = table_counts(client)
    for method, path, body in ADMIN_CALLS:
        r = _call(client, method, path, body, headers=_bearer(key["key"]))
        assert_problem(r, 403, "forbidden", "Authorization", mentions=("admin",))
    assert table_counts(client) == before
    assert rows(client, Client)[0].revoked_at is None


def test_client_key_may_call_client_routes(client, task, key) -> None:
    for method, path, body in CLIENT_CALLS[:3]:
        r = _call(client, method, path, body, headers=_bearer(key["key"]))
        assert r.status_code == 200, (method, path, r.text)


def test_revoked_key_is_401_and_its_predictions_stay(client, task, key) -> None:
    headers = _bearer(key["key"])
    predict(client, text="before revocation", headers=headers)
    r = client.delete(f"/v1/clients/{key['id']}")
    assert r.status_code == 200 and r.json()["purged_feedback"] == 0 and r.json()["revoked_at"] is not None
    [listed] = client.get("/v1/clients").json()
    assert listed["revoked_at"] is not None
    before = table_counts(client)
    assert_problem(client.get("/v1/tasks", headers=headers), 401, "unauthorized", "Authorization",
                   mentions=("revoked",))
    r = client.post("/v1/tasks/tickets/predict", json={"text": "after"}, headers=headers)
    assert_problem(r, 401, "unauthorized", "Authorization")
    assert table_counts(client) == before
    assert [p.client_id for p in rows(client, Prediction)] == [key["id"]]


def test_revoking_twice_keeps_the_first_time(client, key) -> None:
    assert client.delete(f"/v1/clients/{key['id']}").status_code == 200
    first = client.get("/v1/clients").json()[0]["revoked_at"]
    assert client.delete(f"/v1/clients/{key['id']}").status_code == 200
    assert client.get("/v1/clients").json()[0]["revoked_at"] == first


def test_revoking_one_key_leaves_the_others(client, task) -> None:
    a, b = _new_key(client, "a"), _new_key(client, "b")
    assert client.delete(f"/v1/clients/{a['id']}").status_code == 200
    assert client.get("/v1/tasks", headers=_bearer(b["key"])).status_code == 200


def test_revoking_unknown_client_is_404(client) -> None:
    assert_problem(client.delete("/v1/clients/999"), 404, "unknown-client", "client_id", mentions=("999",))


# ---------------------------------------------------------------- dev mode: no admin token configured


@pytest.fixture
def dev_client(tmp_path: Path, db_url: str, tiny_model_dir: Path) -> Iterator[TestClient]:
    settings: Settings = make_settings(tmp_path / "data", db_url, tiny_model_dir, admin_token=None)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as c:
        yield c  # no Authorization header by default


def test_dev_mode_calls_without_a_token_act_as_admin(dev_client) -> None:
    create_task(dev_client)
    created = _new_key(dev_client)
    pid = predict(dev_client, text="hello")["predictions"][0]["id"]
    assert dev_client.post(f"/v1/predictions/{pid}/feedback", json={"signal": -1}).status_code == 201
    assert dev_client.get("/v1/tasks/tickets/models").status_code == 200
    assert [p.client_id for p in rows(dev_client, Prediction)] == [None]
    # A client key still identifies a client, not the admin.
    r = dev_client.post("/v1/tasks", json={"name": "x", "labels": ["a", "b"]}, headers=_bearer(created["key"]))
    assert_problem(r, 403, "forbidden", "Authorization")
    assert dev_client.get("/v1/tasks", headers=_bearer(created["key"])).status_code == 200


def test_dev_mode_still_refuses_a_wrong_token(dev_client) -> None:
    r = dev_client.get("/v1/tasks", headers={"Authorization": "Bearer guessed"})
    assert_problem(r, 401, "unauthorized", "Authorization")


def test_admin_token_configured_means_no_dev_mode(client) -> None:
    del client.headers["Authorization"]
    assert_problem(client.post("/v1/clients", json={"name": "x", "tasks": ["t"]}), 401, "unauthorized",
                   "Authorization")
    assert table_counts(client)["clients"] == 0


# ---------------------------------------------------------------- the tokens themselves


@pytest.mark.parametrize("setting", ["admin_token", "metrics_token"])
def test_a_short_token_is_refused(setting: str) -> None:
    with pytest.raises(ValidationError, match=f"FLYWHEEL_{setting.upper()} must be at least 32 characters"):
        Settings(**{setting: "x" * 31})
    assert getattr(Settings(**{setting: " " + "x" * 32 + "\n"}), setting) == "x" * 32
    assert "x" * 32 not in repr(Settings(**{setting: "x" * 32}))  # nor shown where settings are printed


def test_serve_with_a_short_admin_token_stops_at_start_saying_why(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "FLYWHEEL_DATA_DIR": str(tmp_path), "FLYWHEEL_ADMIN_TOKEN": "hunter2"}
    done = subprocess.run([sys.executable, "-m", "app.cli", "serve"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, said
    assert "FLYWHEEL_ADMIN_TOKEN must be at least 32 characters" in said and "Traceback" not in said, said
    assert "hunter2" not in said
