"""Feedback is committed in groups: what queues while one transaction runs goes into the next,
each caller hears back only after its own row is committed, and a wrong request in a group
fails alone."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy.orm import Session, sessionmaker

from app.db.group_commit import GroupCommit
from app.db.tables import Feedback
from app.core.errors import Forbidden, NotFound
from app.services.clients import ADMIN, Caller
from app.services.feedback import Signal, record_signals
from support.api import create_task, predict, rows


def test_what_queues_during_a_commit_goes_into_the_next_one() -> None:
    groups: list[list[int]] = []
    first_in, release = threading.Event(), threading.Event()

    def commit(items):
        groups.append(list(items))
        if len(groups) == 1:
            first_in.set()
            assert release.wait(30)
        return [i * 10 if i != 7 else ValueError("seven is refused") for i in items]

    async def main() -> list:
        g: GroupCommit[int, int] = GroupCommit(commit)
        first = asyncio.ensure_future(g.submit(0))
        while not first_in.is_set():
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(g.submit(i)) for i in range(1, 10)]
        await asyncio.sleep(0.01)
        assert not any(f.done() for f in rest)  # nobody hears back before their commit
        release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = asyncio.run(main())
    assert groups == [[0], list(range(1, 10))]
    assert results[:7] == [0, 10, 20, 30, 40, 50, 60] and results[8:] == [80, 90]
    assert isinstance(results[7], ValueError)


def test_a_group_with_wrong_requests_commits_the_right_ones(client) -> None:
    create_task(client)
    sessions: sessionmaker[Session] = client.app.state.flywheel.sessions
    key = client.post("/v1/clients", json={"name": "app", "tasks": ["tickets"]}).json()
    app = Caller(is_admin=False, client_id=key["id"], name="app", tasks=frozenset({"tickets"}))
    mine = predict(client, headers={"Authorization": f"Bearer {key['key']}"}, texts=["a", "b"])["predictions"]
    admins = predict(client, text="the admin's")["predictions"][0]
    signals = [Signal(mine[0]["id"], app, 1), Signal("no-such-prediction", app, 1),
               Signal(admins["id"], app, -1), Signal(mine[1]["id"], app, -1, correction="billing"),
               Signal(admins["id"], ADMIN, 1)]
    results = record_signals(sessions, signals)
    assert isinstance(results[1], NotFound) and isinstance(results[2], Forbidden)
    ok = [r for r in results if not isinstance(r, Exception)]
    assert len(ok) == 3 and [r[1] for r in ok] == ["tickets"] * 3
    stored = {(f.prediction_id, f.signal, f.correction) for f in rows(client, Feedback)}
    assert stored == {(mine[0]["id"], 1, None), (mine[1]["id"], -1, "billing"), (admins["id"], 1, None)}
    assert sorted(r[0]["id"] for r in ok) == sorted(f.id for f in rows(client, Feedback))


def test_concurrent_feedback_over_http_is_all_committed_and_counted_in_groups(client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    create_task(client)
    pids = [p["id"] for p in predict(client, texts=[f"text {i}" for i in range(40)])["predictions"]]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda pid: client.post(f"/v1/predictions/{pid}/feedback", json={"signal": 1}),
                                pids))
    assert [a.status_code for a in answers] == [201] * 40
    assert sorted(a.json()["id"] for a in answers) == sorted(f.id for f in rows(client, Feedback))
    metrics = client.get("/metrics").text
    total = next(float(line.split()[1]) for line in metrics.splitlines()
                 if line.startswith("flywheel_feedback_group_rows_sum"))
    assert total == 40
