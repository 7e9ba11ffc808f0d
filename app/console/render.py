"""How the console answers: the Jinja templates with their filters and globals, the headers every
page carries (a CSP that lets a page load nothing from elsewhere, no caching), and the HTML page
that a domain error, invalid input or a missing session becomes (`ConsoleRoute`), so a page's
route only parses, calls one service and renders."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from app import __version__
from app.api.problems import status_of
from app.console import charts
from app.console.session import LoginRequired, csrf_for, dev_mode, remember_csrf
from app.core.errors import DomainError
from app.services import console as page_data
from app.services.clients import Caller

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# Everything a page loads comes from this server: no CDN (Flywheel runs where nothing can be downloaded).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def ago(when: datetime | None) -> str:
    """'3 min ago' for a timestamp, '—' for none."""
    if when is None:
        return "—"
    s = (datetime.now(timezone.utc) - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{int(s // size)} {unit} ago"
    return "just now"


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal, '—' for none."""
    return "—" if x is None else f"{100 * x:.1f}%"


templates.env.filters.update(ago=ago, pct=pct)
templates.env.globals.update(charts=charts, version=__version__, kinds=page_data.KINDS)


def render(request: Request, state: Any, name: str, context: dict[str, Any], *, caller: Caller | None,
           status_code: int = 200) -> HTMLResponse:
    """A template as a page, given the caller, a fresh CSRF token for its forms and the console's headers."""
    csrf = csrf_for(state, request)
    response = templates.TemplateResponse(request, name, {**context, "caller": caller, "csrf": csrf.token,
                                                          "dev_mode": dev_mode(state)}, status_code=status_code)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    remember_csrf(request, response, csrf)
    return response


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    """What a page that failed shows instead, with the status the API would answer."""
    return render(request, request.app.state.flywheel, "error.html",
                  {"title": title, "detail": detail, "status": status}, caller=None, status_code=status)


class ConsoleRoute(APIRoute):
    """Answers a domain error with an HTML page (status as in the API) and a missing session
    with a redirect to the login page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as exc:
                return RedirectResponse(f"/ui/login?next={quote(exc.next_path)}", status_code=303)
            except DomainError as exc:
                return error_page(request, status_of(exc), exc.title, exc.detail)
            except (RequestValidationError, ValidationError) as exc:
                return error_page(request, 422, "Invalid input", "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'][1:] or e['loc'])}: {e['msg']}" for e in exc.errors()))

        return route


def page_router() -> APIRouter:
    """A router for one group of pages, under /ui: each route answers as `ConsoleRoute` says, and
    none is in the OpenAPI schema."""
    return APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)


def back_to(path: str, **query: Any) -> RedirectResponse:
    """Where a form sends the browser once it is acted on (303), with the query given (None left out)."""
    q = "&".join(f"{k}={quote(str(v))}" for k, v in query.items() if v is not None)
    return RedirectResponse(f"{path}?{q}" if q else path, status_code=303)
