"""Per-client rate limits (429 + Retry-After, nothing stored), failed authentications that stop
costing database lookups, and the token buckets behind both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from app.main import create_app
from app.core.ratelimit import TokenBuckets
from app.services import clients as clients_service
from support import ADMIN, make_settings
from support.api import assert_problem, create_task, table_counts

SLOW = 0.001  # tokens a second: none come back while a test runs


def test_a_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    b = TokenBuckets(rate=2.0, burst=3)
    assert [b.take("k", now=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("k", now=10.0) == pytest.approx(0.5)  # one token comes back in half a second
    assert b.take("k", now=10.5) == 0.0
    assert b.take("other", now=10.5) == 0.0  # keys do not share
    assert b.take("k", now=100.0) == 0.0 and b.exhausted("k", now=100.0) == 0.0  # refilled, capped at burst


def test_a_rate_of_zero_is_no_limit() -> None:
    b = TokenBuckets(rate=0, burst=1)
    assert all(b.take("k", now=0.0) == 0.0 for _ in range(1000))


def test_forgetting_keeps_memory_bounded() -> None:
    b = TokenBuckets(rate=1.0, burst=1, max_keys=10)
    for i in range(100):
        b.take(i, now=float(i))
    assert len(b._buckets) <= 10


@pytest.fixture
def limited(tmp_path: Path, db_url: str, tiny_model_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "data", db_url, tiny_model_dir, rate_limit_per_s=SLOW, rate_limit_burst=3,
                             auth_failures_per_s=SLOW, auth_failures_burst=3)
    with TestClient(create_app(settings), headers=ADMIN) as c:
        create_task(c)
        yield c


def _key(c: TestClient, name: str) -> dict[str, str]:
    r = c.post("/v1/clients", json={"name": name, "tasks": ["tickets"]})
    return {"Authorization": f"Bearer {r.json()['key']}"}


def test_a_client_over_its_rate_gets_429_and_nothing_is_stored(limited: TestClient) -> None:
    a, b = _key(limited, "a"), _key(limited, "b")
    for _ in range(3):
        assert limited.post("/v1/tasks/tickets/predict", json={"text": "hi"}, headers=a).status_code == 200
    before = table_counts(limited)
    r = limited.post("/v1/tasks/tickets/predict", json={"text": "one too many"}, headers=a)
    assert_problem(r, 429, "rate-limited", "Authorization", mentions=("'a'", "requests/s"))
    assert int(r.headers["retry-after"]) >= 1
    assert table_counts(limited) == before
    assert limited.post("/v1/tasks/tickets/predict", json={"text": "hi"}, headers=b).status_code == 200  # b is not a
    for _ in range(5):  # the admin token is not limited
        assert limited.get("/v1/tasks").status_code == 200
    metrics = limited.get("/metrics").text
    assert 'flywheel_rate_limited_total{reason="client"} 1.0' in metrics


def test_repeated_bad_keys_cost_no_lookups_and_then_get_429(limited: TestClient, monkeypatch) -> None:
    monkeypatch.setattr(clients_service, "KEY_CACHE_TTL_S", 3600.0)  # the good key stays cached throughout
    good = _key(limited, "good")
    assert limited.get("/v1/tasks", headers=good).status_code == 200
    lookups: list[str] = []
    engine = limited.app.state.flywheel.engine

    def count(conn, cursor, statement, *args) -> None:
        if "FROM clients" in statement:
            lookups.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        statuses = [limited.get("/v1/tasks", headers={"Authorization": f"Bearer fw_bogus-{i}"}).status_code
                    for i in range(6)]
        assert statuses == [401, 401, 401, 429, 429, 429]  # a budget of 3 failures, then no more lookups
        assert len(lookups) == 3
        for _ in range(5):  # a bogus key already looked up is remembered as unknown: no lookup again
            assert limited.get("/v1/tasks", headers={"Authorization": "Bearer fw_bogus-0"}).status_code == 401
        assert len(lookups) == 3
        r = limited.get("/v1/tasks", headers={"Authorization": "Bearer fw_bogus-99"})
        assert_problem(r, 429, "rate-limited", "Authorization", mentions=("failed authentications",))
        assert int(r.headers["retry-after"]) >= 1
        # A known key from the same address is answered from the cache, without the failure budget.
        assert limited.get("/v1/tasks", headers=good).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_good_key_outlives_its_cache_entry_while_bogus_keys_exhaust_its_address(limited: TestClient,
                                                                                  monkeypatch) -> None:
    """Behind one NAT a good key and a flood of bogus ones share an address: once the flood has
    spent the address's failure budget, the good key is still answered after its cache entry
    expired (it is looked up again, so a revocation still applies)."""
    monkeypatch.setattr(clients_service, "KEY_CACHE_TTL_S", 0.0)  # every call looks the key up again
    good = _key(limited, "good")
    assert limited.get("/v1/tasks", headers=good).status_code == 200
    statuses = [limited.get("/v1/tasks", headers={"Authorization": f"Bearer fw_bogus-{i}"}).status_code
                for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    for _ in range(2):  # (the key's own rate allows 3 requests in all)
        assert limited.get("/v1/tasks", headers=good).status_code == 200
    r = limited.get("/v1/tasks", headers={"Authorization": "Bearer fw_bogus-new"})
    assert r.status_code == 429  # the flood is still refused
    with limited.app.state.flywheel.sessions.begin() as s:  # revoked as another API process would
        s.execute(text("UPDATE clients SET revoked_at = CURRENT_TIMESTAMP WHERE name = 'good'"))
    assert limited.get("/v1/tasks", headers=good).status_code == 401


def test_a_client_that_ignores_retry_after_waits_for_each_refusal(tmp_path: Path, db_url: str,
                                                                   tiny_model_dir: Path) -> None:
    """A 429 is answered after FLYWHEEL_RATE_LIMIT_DELAY_S (never past its Retry-After): a client
    asking again at once can make only as many refusals as it holds connections, each costing the
    server a sleep instead of CPU.  Answers within the rate are not delayed."""
    import time

    settings = make_settings(tmp_path / "data", db_url, tiny_model_dir, rate_limit_per_s=SLOW, rate_limit_burst=2,
                             rate_limit_delay_s=0.3)
    with TestClient(create_app(settings), headers=ADMIN) as c:
        create_task(c)
        key = _key(c, "hasty")
        for _ in range(2):
            assert c.get("/v1/tasks", headers=key).status_code == 200
        started = time.perf_counter()
        r = c.get("/v1/tasks", headers=key)
        assert r.status_code == 429 and time.perf_counter() - started >= 0.3
