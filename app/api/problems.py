"""RFC 9457 problem+json for every error, with a stable `type` per kind of problem.

The one place where domain errors (`app/core/errors.py`) become HTTP: each class has one status.
`Problem` is for what only HTTP can get wrong (a missing header, an unsupported media type)."""

from __future__ import annotations

import asyncio

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.errors import (Conflict, DomainError, Forbidden, Invalid, NotFound, RateLimited, RetryLater, TooLarge,
                        Unavailable)
from app.core.security import printable
from app.services.health import OUTAGE_ERRORS, database_outage

log = logging.getLogger("flywheel.api")

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:flywheel:problem:"

_STATUS_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    415: "unsupported-media-type",
    422: "validation",
    429: "rate-limited",
    503: "unavailable",
}


class Problem(Exception):
    """Raise from anywhere below a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.field, self.headers, self.extra = field, headers, extra


# Each domain error's HTTP status (a subclass takes its nearest listed ancestor's).
STATUS_OF: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    TooLarge: 413,
    Forbidden: 403,
    Unavailable: 503,
    RateLimited: 429,
}


def status_of(exc: DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 400


def problem_response(
    status: int, slug: str, title: str, detail: str, instance: str, *, field: str | None = None,
    headers: dict[str, str] | None = None, **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": detail,
                            "instance": instance}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route fully matches on `path`, asked through Starlette's own matching."""
    allowed = []
    for method in HTTP_METHODS:
        scope = {"type": "http", "path": path, "method": method, "root_path": "", "path_params": {}, "headers": []}
        if any(route.matches(scope)[0] == Match.FULL for route in app.router.routes):
            allowed.append(method)
    return allowed


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.slug, exc.title, exc.detail, request.url.path,
                                field=exc.field, headers=exc.headers, **exc.extra)

    async def _outage(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable on %s %s: %s", request.method, printable(request.url.path),
                    type(exc).__name__)
        return await _domain(request, database_outage(exc))

    for outage in OUTAGE_ERRORS:
        app.add_exception_handler(outage, _outage)

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        headers = None
        if isinstance(exc, RetryLater) and exc.retry_after_s > 0:
            headers = {"Retry-After": str(exc.retry_after_s)}
        if isinstance(exc, RateLimited):
            # A tarpit: a client that ignores Retry-After and asks again at once waits here (costing
            # the server a sleeping coroutine, not CPU), so its refusals cannot crowd out others.
            delay = min(float(exc.retry_after_s), request.app.state.flywheel.settings.rate_limit_delay_s)
            if delay > 0:
                await asyncio.sleep(delay)
        return problem_response(status_of(exc), exc.slug, exc.title, exc.detail, request.url.path,
                                field=exc.field, headers=headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": field_path(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")} for e in exc.errors()]
        json_error = any(e.get("type") == "json_invalid" for e in exc.errors())
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        if json_error:
            first = {"field": "body", "message": first["message"]}
            return problem_response(422, "malformed-json", "Malformed JSON",
                                    f"The request body is not valid JSON: {first['message']}.", request.url.path,
                                    field="body", errors=errors)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(422, "validation", "Invalid request", detail, request.url.path,
                                field=first["field"], errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = _STATUS_SLUGS.get(exc.status_code, "error")
        title = slug.replace("-", " ").capitalize()
        headers = dict(getattr(exc, "headers", None) or {})
        detail = str(exc.detail)
        if exc.status_code == 405:
            # Starlette names only the methods of the first route whose path matched; a path served
            # by several routes (GET and POST /v1/tasks) allows all of theirs.
            allowed = allowed_methods(app, request.url.path)
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}."
        return problem_response(exc.status_code, slug, title, detail, request.url.path, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, printable(request.url.path))
        return problem_response(500, "internal", "Internal server error",
                                "The server failed to handle this request; nothing was committed.", request.url.path)
