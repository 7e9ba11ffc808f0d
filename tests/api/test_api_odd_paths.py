"""Odd path parameters answer 4xx problem+json, never 500 (issue 11, item 10): ids past 64 bits
(the database driver would raise OverflowError) and a NUL character in a task name (PostgreSQL
refuses it in a query), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

HUGE, NEGATIVE = "9223372036854775808", "-9223372036854775809"


@pytest.mark.parametrize("method, path", [
    ("POST", f"/v1/tasks/intent/models/{HUGE}/activate"),
    ("GET", f"/v1/runs/{HUGE}"),
    ("GET", f"/v1/runs/{NEGATIVE}"),
    ("POST", f"/v1/runs/{HUGE}/cancel"),
    ("DELETE", f"/v1/clients/{HUGE}"),
])
def test_ids_past_64_bits_are_422(client, method: str, path: str) -> None:
    r = client.request(method, path)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/v1/tasks/bad%00name", None),
    ("POST", "/v1/tasks/bad%00name/predict", {"text": "hello"}),
    ("POST", "/v1/tasks/bad%00name/examples", {"examples": [{"text": "a", "label": "b"}]}),
    ("GET", "/v1/tasks/bad%00name/review", None),
    ("POST", "/v1/tasks/bad%00name/retrain", None),
    ("GET", "/v1/tasks/bad%00name/runs", None),
    ("GET", "/v1/tasks/bad%00name/models", None),
    ("POST", "/v1/tasks/bad%00name/models/0/activate", None),
])
def test_a_nul_in_a_task_name_is_422_naming_it(client, method: str, path: str, body: dict | None) -> None:
    r = client.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["field"] == "path.task"


def test_control_characters_in_a_path_cannot_forge_a_log_line(client, caplog) -> None:
    """A path decodes `%0B`, `%1B`, `%C2%85` or `%E2%80%A8` into characters that end a line or
    drive a terminal; where a path is logged (here: a database outage) they are written escaped,
    on the entry's one line.  (Starlette already drops a decoded CR and LF from `request.url`.)"""
    from sqlalchemy.exc import OperationalError

    def down():
        raise OperationalError("SELECT 1", {}, ConnectionError("database is down"))

    state = client.app.state.flywheel
    sessions, state.sessions = state.sessions, down
    try:
        with caplog.at_level("WARNING", logger="flywheel.api"):
            r = client.get("/v1/tasks/x%0A%0B2026 INFO forged%C2%85%E2%80%A8ERROR %1B[2K")
    finally:
        state.sessions = sessions
    assert r.status_code == 503, r.text
    [logged] = [rec.getMessage() for rec in caplog.records if "database unavailable" in rec.getMessage()]
    assert logged.isprintable() and len(logged.splitlines()) == 1, repr(logged)
    assert "/v1/tasks/x\\x0b2026 INFO forged\\x85\\u2028ERROR \\x1b[2K" in logged, logged
