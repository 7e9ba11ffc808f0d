"""Serve the app over real HTTP: uvicorn on an OS-chosen loopback port, in a thread, with the
connection limits `flywheel serve` gives it."""

from __future__ import annotations

from contextlib import AbstractContextManager

from app.cli import connection_limits
from app.core.config import Settings
from app.process.launch import serve_in_thread as _serve_app_in_thread
from app.main import create_app

STARTUP_S = 180  # when to give up waiting, not a performance claim


def serve_in_thread(settings: Settings) -> AbstractContextManager[str]:
    """The app for `settings` on a loopback socket; the base URL while the `with` lasts."""
    return _serve_app_in_thread(create_app(settings), timeout_s=STARTUP_S, options=connection_limits(settings))
