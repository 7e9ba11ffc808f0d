"""Checks that run before a request reaches a route: before the caller is authenticated and
before any body is parsed, so an anonymous client cannot make the server buffer or parse much,
and all clients together cannot make it buffer more than a fixed budget.

Plain ASGI middleware (see `app.main.RequestTiming` for why not `@app.middleware`)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import Problem, problem_response
from app.core.security import is_loopback

UPLOAD_PATH = re.compile(r"^/v1/tasks/[^/]+/examples/?$")
BUSY_RETRY_AFTER_S = 1  # bodies are read in moments; a second is enough for budget to come free


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class BodyBudget:
    """Bytes of request bodies held in memory at once, all requests of this process together.

    Used from the event loop only (no await between checking and taking), so it needs no lock."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.total:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


class _CountedBody:
    """One request's body as it is read: at most `limit` bytes, each byte paid for from the
    budget before it is read (a declared Content-Length at once, a chunked body chunk by
    chunk).  Raises a 413 or 503 Problem; `release()` gives the budget back."""

    def __init__(self, receive: Receive, budget: BodyBudget, *, limit: int, setting: str,
                 declared: int | None) -> None:
        self._receive, self._budget = receive, budget
        self.limit, self.setting, self.declared = limit, setting, declared
        self.size = 0
        self.held = 0

    def _pay(self, upto: int) -> None:
        if upto <= self.held:
            return
        if not self._budget.take(upto - self.held):
            raise Problem(503, "server-busy", "Server busy",
                          f"Request bodies already fill the {self._budget.total} bytes this server holds at once "
                          "(FLYWHEEL_MAX_BUFFERED_BYTES); nothing of this one was kept. Try again shortly.",
                          field="body", headers={"Retry-After": str(BUSY_RETRY_AFTER_S), "Connection": "close"})
        self.held = upto

    async def receive(self) -> Message:
        if self.declared:
            self._pay(self.declared)
        message = await self._receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.limit:
                raise too_large(self.limit, self.setting)
            self._pay(self.size)
        return message

    def release(self) -> None:
        self._budget.give(self.held)
        self.held = 0


def too_large(limit: int, setting: str) -> Problem:
    return Problem(413, "too-large", "Request body too large",
                   f"The request body is over {limit} bytes ({setting}); nothing was read past that.",
                   field="body", headers={"Connection": "close"})


class BodyLimit:
    """At most `limit` bytes of body (`upload_limit` on the examples upload), counted while it
    is read, and at most `budget.total` bytes of bodies held at once across all requests.

    A declared Content-Length over the limit is refused (413) before a byte is read, and a
    chunked body as soon as it passes the limit.  A body that cannot get its share of the
    budget is refused (503 `server-busy`, Retry-After) before it is read: a declared length is
    paid for whole before the first byte, a chunked body chunk by chunk.  problem+json always.

    Any other request's body is read here, before authentication, and handed to the route
    whole.  The examples upload (admin only, and the only large body) is not read here: the
    route reads it after its caller is authenticated, so an anonymous upload is refused 401
    before its body is read; the counting and the budget apply to it the same way while the
    route reads.  The budget is given back when the response is done."""

    def __init__(self, app: ASGIApp, *, limit: int, upload_limit: int, budget: BodyBudget) -> None:
        self.app, self.limit, self.upload_limit, self.budget = app, limit, upload_limit, budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = bool(UPLOAD_PATH.match(scope["path"]))
        limit = self.upload_limit if upload else self.limit
        setting = "FLYWHEEL_MAX_UPLOAD_BYTES" if upload else "FLYWHEEL_MAX_REQUEST_BYTES"
        header = _header(scope, b"content-length")
        declared = int(header) if header is not None and header.strip().isdigit() else None
        if declared is not None and declared > limit:
            await self._refuse(scope, receive, send, too_large(limit, setting))
            return
        body = _CountedBody(receive, self.budget, limit=limit, setting=setting, declared=declared)
        try:
            if upload:
                await self.app(scope, body.receive, send)
                return
            try:
                chunks: list[bytes] = []
                more = True
                while more:
                    message = await body.receive()
                    if message["type"] != "http.request":  # the client went away
                        return
                    chunks.append(message.get("body", b""))
                    more = message.get("more_body", False)
            except Problem as refused:
                await self._refuse(scope, receive, send, refused)
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            body.release()

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, refused: Problem) -> None:
        response = problem_response(refused.status, refused.slug, refused.title, refused.detail, scope["path"],
                                    field=refused.field, headers=refused.headers)
        await response(scope, receive, send)


def _is_loopback(host: str) -> bool:
    """A Host header (or an Origin's host) naming a loopback address, with or without a port."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return is_loopback(host)


class LoopbackOnly:
    """Development mode (no admin token) makes every caller on loopback the admin, so that trust
    must not extend to a web page the developer happens to open: a request whose `Host` is not a
    loopback name (DNS rebinding) or that a browser marks as coming from another site
    (`Origin` not on loopback, or `Sec-Fetch-Site: cross-site`) is refused with 403."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            why = self._why_refused(scope)
            if why is not None:
                response = problem_response(
                    403, "not-loopback", "Refused in development mode",
                    f"{why} This server has no FLYWHEEL_ADMIN_TOKEN, so it answers only requests made "
                    "on this machine by something other than a web page.", scope["path"], field=why.split(" ")[0])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _why_refused(scope: Scope) -> str | None:
        host = _header(scope, b"host")
        if host is None or not _is_loopback(host):
            return f"Host {host!r} is not a loopback name."
        origin = _header(scope, b"origin")
        if origin is not None and not _is_loopback(urlsplit(origin).netloc or origin):
            return f"Origin {origin!r} is another site."
        if (_header(scope, b"sec-fetch-site") or "").lower() == "cross-site":
            return "Sec-Fetch-Site 'cross-site' says a web page on another site sent this."
        return None
