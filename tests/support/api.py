"""Helpers the HTTP tests share: calls that must succeed, the shape of a problem document, the
rows a call left in the database, one sample of a Prometheus exposition."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import func, select

from app.api.problems import TYPE_BASE
from app.db.tables import Client, ClientTask, Example, Feedback, ModelVersion, Prediction, Task, TrainingRun

LABELS = ["billing", "card_lost", "weather"]
PROBLEM_JSON = "application/problem+json"


def create_task(client, name: str = "tickets", labels: list[str] | None = None, **extra: Any) -> dict:
    r = client.post("/v1/tasks", json={"name": name, "labels": labels or LABELS, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def predict(client, task: str = "tickets", headers: dict | None = None, **body: Any) -> dict:
    r = client.post(f"/v1/tasks/{task}/predict", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def assert_problem(r, status: int, slug: str, field: str | None, *, mentions: tuple[str, ...] = ()) -> dict:
    """An RFC 9457 problem document with a stable type, the status, the field at fault and a
    detail a person can act on (it names what is wrong: `mentions`)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON), r.headers["content-type"]
    body = r.json()
    assert body["type"] == TYPE_BASE + slug, body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and len(body["detail"]) >= 10, body
    if field is not None:
        assert body.get("field") == field, body
    for word in mentions:
        assert word.lower() in body["detail"].lower(), (word, body["detail"])
    return body


TABLES = (Task, ModelVersion, Prediction, Feedback, Example, Client, ClientTask, TrainingRun)


def table_counts(client) -> dict[str, int]:
    """Rows per table, read through the app's own database connection."""
    with client.app.state.flywheel.sessions() as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) for m in TABLES}


def rows(client, model, *where) -> list:
    with client.app.state.flywheel.sessions() as s:
        return list(s.scalars(select(model).where(*where)))

def problem(r: httpx.Response, status: int, slug: str | None, field: str) -> dict:
    """A problem+json answer with this status naming `field` (and, when given, of type `slug`)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["field"] == field, body
    if slug is not None:
        assert body["type"].endswith(":" + slug), body
    return body


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition, or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None
