"""Checks that run before a request reaches a route: before the caller is authenticated and
before any body is parsed, so an anonymous client cannot make the server buffer or parse much.

Plain ASGI middleware (see `app.main.RequestTiming` for why not `@app.middleware`)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem_response
from app.security import is_loopback

UPLOAD_PATH = re.compile(r"^/v1/tasks/[^/]+/examples/?$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class BodyLimit:
    """At most `limit` bytes of body (`upload_limit` on the examples upload), counted while it
    is read: a declared Content-Length over the limit is refused before a byte is read, and a
    chunked body is refused as soon as it passes the limit.  413 problem+json either way.

    The body is read here, up to the limit, and handed to the route whole; a multipart upload
    is therefore never spooled past `upload_limit` either."""

    def __init__(self, app: ASGIApp, *, limit: int, upload_limit: int) -> None:
        self.app, self.limit, self.upload_limit = app, limit, upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = bool(UPLOAD_PATH.match(scope["path"]))
        limit = self.upload_limit if upload else self.limit
        setting = "FLYWHEEL_MAX_UPLOAD_BYTES" if upload else "FLYWHEEL_MAX_REQUEST_BYTES"
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit, setting)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, receive, send, limit, setting)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int, setting: str) -> None:
        response = problem_response(
            413, "too-large", "Request body too large",
            f"The request body is over {limit} bytes ({setting}); nothing was read past that.",
            scope["path"], field="body", headers={"Connection": "close"})
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
