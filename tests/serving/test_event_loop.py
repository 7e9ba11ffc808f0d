"""A request that waits for the database waits on a thread, never on the event loop: with every
pooled connection taken, the console's review action waits until one comes free, and /healthz
(and everything else) answers meanwhile."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import event

from app.core.config import Settings
from app.process.launch import serve_in_thread
from app.main import create_app
from support import ADMIN, ADMIN_TOKEN

WAIT_S = 60  # only stops a broken test from hanging


def _csrf(page: httpx.Response) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def _log_in(browser: httpx.Client, page: str) -> str:
    """Log in as the admin; the CSRF token of `page`'s forms."""
    r = browser.post("/ui/login", data={"csrf": _csrf(browser.get("/ui/login")), "token": ADMIN_TOKEN, "next": "/ui"})
    assert r.status_code == 303, r.text
    return _csrf(browser.get(page))


def test_healthz_answers_while_a_review_waits_for_a_database_connection(settings: Settings) -> None:
    app = create_app(settings)
    state = app.state.flywheel
    with serve_in_thread(app) as base, \
            httpx.Client(base_url=base, headers=ADMIN, timeout=WAIT_S) as api, \
            httpx.Client(base_url=base, timeout=WAIT_S) as browser:
        assert api.post("/v1/tasks", json={"name": "tickets", "labels": ["billing", "weather"]}).status_code == 201
        (shown,) = api.post("/v1/tasks/tickets/predict", json={"texts": ["my bill"]}).json()["predictions"]
        csrf = _log_in(browser, "/ui/tasks/tickets/review")

        reached = threading.Event()  # the review's query is about to ask the pool for a connection

        @event.listens_for(state.sessions, "do_orm_execute")
        def _seen(orm_state) -> None:
            if str(orm_state.statement).startswith("SELECT predictions.label, predictions.text"):
                reached.set()

        # Every connection the pool may open, taken: the next checkout waits for one to come back.
        pool = state.engine.pool
        held = [state.engine.connect() for _ in range(pool.size() + pool._max_overflow)]
        try:
            with ThreadPoolExecutor(1) as pool_of_one:
                review = pool_of_one.submit(browser.post, "/ui/tasks/tickets/review",
                                            data={"csrf": csrf, "prediction_id": shown["id"], "answer": shown["label"]})
                assert reached.wait(WAIT_S), "the review never reached its database call"
                assert httpx.get(f"{base}/healthz", timeout=WAIT_S).json() == {"status": "ok"}
                assert not review.done()  # it is still waiting for a connection
                for conn in held:
                    conn.close()
                held = []
                answered = review.result(WAIT_S)
        finally:
            for conn in held:
                conn.close()
        assert answered.status_code == 303, answered.text  # stored once a connection came free
        assert api.get("/v1/tasks/tickets").json()["counts"]["feedback"]["positive"] == 1
