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
def test_ids_past_64_bits_are_422(client, method: str, path: str) -> None:  # noqa: ANN001
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
def test_a_nul_in_a_task_name_is_422_naming_it(client, method: str, path: str, body: dict | None) -> None:  # noqa: ANN001
    r = client.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["field"] == "path.task"
