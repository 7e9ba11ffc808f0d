"""What is refused before a route runs: bodies over the size limit (413, counted while they are
read, before authentication or parsing), bodies past the budget of bytes held at once (503),
connections past the server's limit (503), an upload whose caller is not the admin (before its
body is read) and, in development mode (no admin token), requests a web page could make (a
foreign Host, a foreign Origin, Sec-Fetch-Site: cross-site)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from app.db.tables import Example
from app.process.launch import LOOPBACK, LocalService
from app.main import create_app
from support import ADMIN, ADMIN_TOKEN, make_settings
from support.live import STARTUP_S, serve_in_thread
from support.api import assert_problem, create_task, rows, table_counts
from support.waiting import wait_until

LIMIT = 4096
UPLOAD_LIMIT = 20_000
BUDGET = 20_000  # bytes of bodies held at once: four bodies of LIMIT bytes, not five
WAIT_S = 60  # only stops a broken test from hanging


@pytest.fixture
def live(tmp_path: Path, sqlite_url: str, tiny_model_dir: Path) -> Iterator[str]:
    settings = make_settings(tmp_path / "data", sqlite_url, tiny_model_dir, max_request_bytes=LIMIT,
                             max_upload_bytes=UPLOAD_LIMIT, max_buffered_bytes=BUDGET)
    with serve_in_thread(settings) as base:
        httpx.post(f"{base}/v1/tasks", json={"name": "tickets", "labels": ["a", "b"]}, headers=ADMIN,
                   timeout=60).raise_for_status()
        yield base


def _raw(base: str, head: str, chunks: Iterator[bytes] = iter(())) -> tuple[str, int]:
    """Send `head` (request line and headers), then `chunks` until the server answers; (the
    status line and body of its answer, how many body bytes were sent before it did)."""
    u = urlsplit(base)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(head.encode())
        sent = 0
        s.setblocking(False)
        answer = b""
        for chunk in chunks:
            try:
                answer += s.recv(65536)
            except BlockingIOError:
                pass
            if answer:
                break
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, BlockingIOError):
                break
            sent += len(chunk)
        s.settimeout(30)  # back to blocking, with the deadline the socket was made with
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            more = s.recv(65536)
            if not more:
                break
            answer += more
        try:
            while more := s.recv(65536):
                answer += more
        except (ConnectionResetError, TimeoutError):
            pass
    return answer.decode("latin-1"), sent


def test_a_huge_declared_body_without_a_token_is_413_before_any_byte_is_read(live: str) -> None:
    head = ("POST /v1/tasks/tickets/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 600000000\r\nConnection: close\r\n\r\n")
    answer, _ = _raw(live, head)
    status_line, _, rest = answer.partition("\r\n")
    assert " 413 " in status_line, answer[:300]
    assert "application/problem+json" in rest.lower()
    body = json.loads(rest.split("\r\n\r\n", 1)[1])
    assert body["field"] == "body" and "FLYWHEEL_MAX_REQUEST_BYTES" in body["detail"]


@pytest.mark.parametrize("path, auth, setting", [
    ("predict", "", "FLYWHEEL_MAX_REQUEST_BYTES"),  # refused before authentication
    ("examples", f"Authorization: Bearer {ADMIN_TOKEN}\r\n", "FLYWHEEL_MAX_UPLOAD_BYTES"),  # read by the route
])
def test_a_chunked_body_is_cut_off_at_the_limit_not_read_whole(live: str, path: str, auth: str, setting: str) -> None:
    def endless() -> Iterator[bytes]:
        piece = b"x" * 1024
        while True:
            yield b"%x\r\n%s\r\n" % (len(piece), piece)

    head = (f"POST /v1/tasks/tickets/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n{auth}"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    answer, sent = _raw(live, head, endless())
    assert " 413 " in answer.partition("\r\n")[0], answer[:300]
    assert setting in answer
    # The server answered after about LIMIT bytes, not after the 10 MB the sender would go on to send
    # (sockets buffer a few hundred kB between the two ends).
    assert sent < 10_000_000


def test_under_the_limit_works_and_over_it_nothing_is_stored(live: str) -> None:
    with httpx.Client(base_url=live, headers=ADMIN, timeout=60) as c:
        assert c.post("/v1/tasks/tickets/predict", json={"text": "fine"}).status_code == 200
        big = {"texts": ["y" * 1000] * 5}  # valid, but over 4 kB
        r = c.post("/v1/tasks/tickets/predict", json=big)
        assert_problem(r, 413, "too-large", "body", mentions=(str(LIMIT),))
        csv_rows = "text,label\n" + "".join(f"row number {i},a\n" for i in range(2000))  # ~30 kB
        r = c.post("/v1/tasks/tickets/examples", content=csv_rows, headers={"Content-Type": "text/csv"})
        assert_problem(r, 413, "too-large", "body", mentions=("FLYWHEEL_MAX_UPLOAD_BYTES",))
        small = "text,label\n" + "".join(f"row number {i},a\n" for i in range(300))  # ~5 kB: the upload limit
        assert c.post("/v1/tasks/tickets/examples", content=small, headers={"Content-Type": "text/csv"}).json()[
            "imported"] == 300
        assert c.get("/v1/tasks/tickets").json()["counts"]["predictions"] == 1


def _status(answer: str) -> int:
    return int(answer.split(" ", 2)[1]) if answer.startswith("HTTP/") else 0


def _predict_request(size: int, *, close: bool = True) -> bytes:
    """An anonymous predict call whose JSON body is exactly `size` bytes."""
    body = b'{"text": "' + b"x" * (size - 12) + b'"}'
    assert len(body) == size
    connection = "Connection: close\r\n" if close else ""
    return (f"POST /v1/tasks/tickets/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n{connection}\r\n").encode() + body


def test_bodies_held_at_once_never_pass_the_budget(live: str) -> None:
    """Slow anonymous bodies hold their declared size of the budget from their first byte; once
    it is spent, the next body is refused with 503 before it is read, a smaller one that still
    fits goes on, and the budget comes back when the slow bodies end."""
    u = urlsplit(live)
    slow = [socket.create_connection((u.hostname, u.port), timeout=WAIT_S) for _ in range(BUDGET // LIMIT)]
    try:
        whole = _predict_request(LIMIT, close=False)
        for s in slow:
            s.sendall(whole[:-LIMIT + 10])  # the head and 10 bytes of the body, then nothing for now

        def refused() -> str | None:
            answer, _ = _raw(live, _predict_request(LIMIT).decode())
            return answer if _status(answer) == 503 else None

        answer = wait_until(refused, WAIT_S, "a body refused for want of budget")
        head, _, body = answer.partition("\r\n\r\n")
        assert "application/problem+json" in head.lower() and "retry-after: 1" in head.lower()
        problem = json.loads(body)
        assert problem["type"].endswith(":server-busy") and problem["field"] == "body"
        assert "FLYWHEEL_MAX_BUFFERED_BYTES" in problem["detail"]
        # What is left of the budget still takes a smaller body (anonymous: 401 once it is read).
        assert _status(_raw(live, _predict_request(1000).decode())[0]) == 401
        for s in slow:
            s.sendall(whole[-LIMIT + 10:])
            assert s.recv(65536).startswith(b"HTTP/1.1 401 ")
    finally:
        for s in slow:
            s.close()
    wait_until(lambda: _status(_raw(live, _predict_request(LIMIT).decode())[0]) == 401, WAIT_S,
               "the budget to come back")


def test_an_upload_is_refused_before_its_body_is_read_unless_the_admin_sends_it(live: str) -> None:
    key = httpx.post(f"{live}/v1/clients", json={"name": "team", "tasks": ["tickets"]}, headers=ADMIN,
                     timeout=60).json()["key"]
    head = ("POST /v1/tasks/tickets/examples HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
            f"Content-Length: {UPLOAD_LIMIT}\r\nConnection: close\r\n{{auth}}\r\n")
    for auth, status in [("", 401), ("Authorization: Bearer not-a-key\r\n", 401),
                         (f"Authorization: Bearer {key}\r\n", 403)]:
        answer, _ = _raw(live, head.format(auth=auth))  # not a byte of the body is sent
        assert _status(answer) == status, answer[:300]
        assert "application/problem+json" in answer.lower()


def test_serve_answers_503_past_its_connection_limit(tmp_path: Path, tiny_model_dir: Path) -> None:
    """FLYWHEEL_MAX_CONNECTIONS reaches uvicorn: with two connections held open, a third client
    over a limit of 3 is turned away (uvicorn counts its own connection too) until they close."""
    env = {"FLYWHEEL_BASE_MODEL": str(tiny_model_dir), "FLYWHEEL_MAX_CONNECTIONS": "3"}
    with LocalService(tmp_path / "data", env=env, startup_timeout_s=STARTUP_S) as service:
        idle = [socket.create_connection((LOOPBACK, service.port), timeout=WAIT_S) for _ in range(2)]
        try:
            wait_until(lambda: httpx.get(f"{service.url}/healthz", timeout=WAIT_S).status_code == 503, WAIT_S,
                       "a connection past the limit to be turned away")
        finally:
            for s in idle:
                s.close()
        wait_until(lambda: httpx.get(f"{service.url}/healthz", timeout=WAIT_S).status_code == 200, WAIT_S,
                   "connections to be answered again")


# ---------------------------------------------------------------- development mode


@pytest.fixture
def dev(tmp_path: Path, db_url: str, tiny_model_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "data", db_url, tiny_model_dir, admin_token=None)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as c:
        create_task(c)
        yield c


@pytest.mark.parametrize("headers, field", [
    ({"Host": "evil.example"}, "Host"),  # DNS rebinding: the page's name resolves to 127.0.0.1
    ({"Host": "127.0.0.1.evil.example:8000"}, "Host"),
    ({"Origin": "https://evil.example"}, "Origin"),  # a simple cross-site POST needs no preflight
    ({"Origin": "null"}, "Origin"),  # a sandboxed frame or a file:// page
    ({"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site"),
])
def test_dev_mode_refuses_what_a_web_page_could_send(dev, headers: dict, field: str) -> None:
    before = table_counts(dev)
    for method, path, body in [("POST", "/v1/tasks/tickets/retrain", None),
                               ("POST", "/v1/tasks/tickets/models/0/activate", None),
                               ("GET", "/v1/tasks", None)]:
        r = dev.request(method, path, json=body, headers=headers)
        assert_problem(r, 403, "not-loopback", field, mentions=("FLYWHEEL_ADMIN_TOKEN",))
    r = dev.post("/v1/tasks/tickets/examples", content="text,label\nhello,billing\n",
                 headers={**headers, "Content-Type": "text/plain"})
    assert r.status_code == 403
    assert table_counts(dev) == before
    assert rows(dev, Example) == []


@pytest.mark.parametrize("headers", [{}, {"Host": "localhost:8000"}, {"Host": "[::1]:8000"},
                                     {"Origin": "http://127.0.0.1:8000"}, {"Origin": "http://localhost:3000"},
                                     {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}])
def test_dev_mode_answers_local_tools(dev, headers: dict) -> None:
    assert dev.get("/v1/tasks", headers=headers).status_code == 200


def test_with_an_admin_token_any_host_may_call(client) -> None:
    """Behind a proxy the Host is the service's public name; the token is what protects it."""
    r = client.get("/v1/tasks", headers={"Host": "flywheel.internal.example", "Origin": "https://console.example"})
    assert r.status_code == 200
