"""The console's one router: every group of pages (`app/console/pages/`) under /ui, and `install`,
which adds it, the static files and `/` to the app.  How a page renders and answers errors is
`render.py`; who may see it, `deps.py`; sessions and CSRF, `session.py`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from app.console.pages import clients, login, review, tasks
from app.console.render import ConsoleRoute

STATIC = Path(__file__).parent / "static"

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
for group in (login, tasks, review, clients):  # in the order the routes were declared before the split
    router.include_router(group.router)


def install(app: FastAPI) -> None:
    """The console's pages, its static files, and `/` sending people to it."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console-static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)
