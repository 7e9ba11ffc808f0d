"""List endpoints come a page at a time: `limit` rows, and `Link: <…>; rel="next"` while more
follow; following the links yields every row once, in order."""

from __future__ import annotations

import re

import pytest

from support.api import assert_problem, create_task


def _follow(client, path: str, headers: dict | None = None) -> tuple[list[dict], int]:
    """Every row of a paged list, and how many pages it took."""
    rows, pages = [], 0
    while path:
        r = client.get(path, headers=headers)
        assert r.status_code == 200, r.text
        rows += r.json()
        pages += 1
        link = r.headers.get("link")
        path = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1) if link else None
    return rows, pages


def test_tasks_and_clients_page_through_every_row_once(client) -> None:
    for i in range(5):
        create_task(client, f"task-{i}")
    for i in range(5):
        assert client.post("/v1/clients", json={"name": f"c{i}", "tasks": ["task-0"]}).status_code == 201
    tasks, pages = _follow(client, "/v1/tasks?limit=2")
    assert [t["name"] for t in tasks] == [f"task-{i}" for i in range(5)] and pages == 3
    clients, pages = _follow(client, "/v1/clients?limit=2")
    assert [c["name"] for c in clients] == [f"c{i}" for i in range(5)] and pages == 3
    whole = client.get("/v1/tasks")
    assert len(whole.json()) == 5 and "link" not in whole.headers  # under the default page size: one page


def test_a_clients_key_pages_through_only_its_tasks(client) -> None:
    for i in range(4):
        create_task(client, f"task-{i}")
    key = client.post("/v1/clients", json={"name": "k", "tasks": ["task-1", "task-3"]}).json()["key"]
    tasks, pages = _follow(client, "/v1/tasks?limit=1", headers={"Authorization": f"Bearer {key}"})
    assert [t["name"] for t in tasks] == ["task-1", "task-3"] and pages == 2


def test_versions_and_runs_are_paged(client) -> None:
    create_task(client, "tickets")
    r = client.get("/v1/tasks/tickets/models?limit=1")
    assert [v["version"] for v in r.json()] == [0] and "link" not in r.headers
    run = client.post("/v1/tasks/tickets/retrain").json()["run_id"]
    assert [x["id"] for x in client.get("/v1/tasks/tickets/runs?limit=1").json()] == [run]


@pytest.mark.parametrize("query, field", [("limit=0", "query.limit"), ("limit=501", "query.limit"),
                                          ("limit=x", "query.limit"), ("after=-1", "query.after"),
                                          ("after=99999999999999999999", "query.after")])
def test_a_bad_page_is_422(client, query: str, field: str) -> None:
    assert_problem(client.get(f"/v1/tasks?{query}"), 422, "validation", field)
