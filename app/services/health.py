"""Readiness: the database answers and every task's active version is loaded here."""

from __future__ import annotations

from sqlalchemy import text

from app.db.session import OUTAGE_ERRORS
from app.db.threads import in_db_thread
from app.db.versions import active_rows
from app.core.errors import DatabaseUnavailable, Unavailable
from app.process.state import AppState

OUTAGE_RETRY_AFTER_S = 5


def _active(state: AppState) -> list:
    with state.sessions() as s:
        s.execute(text("SELECT 1"))
        return active_rows(s)


async def readiness(state: AppState) -> dict[str, object]:
    try:
        rows = await in_db_thread(_active, state)
    except Exception as exc:
        raise Unavailable(f"Database unreachable: {type(exc).__name__}.", slug="not-ready", title="Not ready",
                          retry_after_s=OUTAGE_RETRY_AFTER_S) from None
    loaded = state.served.loaded()
    bad = state.served.unloadable
    unloadable = {r.task: bad[r.version_id] for r in rows if r.version_id in bad}
    missing = [r.task for r in rows if r.task not in loaded]
    if missing:
        why = "; ".join(f"{t}: {unloadable[t]}" for t in missing if t in unloadable)
        raise Unavailable(f"Models not loaded: {', '.join(missing)}" + (f" ({why})" if why else "") + ".",
                          slug="not-ready", title="Not ready")
    # A task whose active version cannot be loaded still answers with the version it had (or its
    # parent): ready, and the detail says so.
    answer: dict[str, object] = {"status": "ready", "models": {t: m.version for t, m in loaded.items()},
                                 "engines": {t: m.engine for t, m in loaded.items()}, "unloadable": unloadable}
    if state.worker is not None:  # the embedded worker; its being down does not stop serving
        answer["worker"] = state.worker.status()
    return answer


def database_outage(exc: Exception) -> DatabaseUnavailable:
    """What to tell a caller whose request met a database outage (`OUTAGE_ERRORS`)."""
    return DatabaseUnavailable(f"The database is unavailable ({type(exc).__name__}); nothing was committed. "
                               "Retry shortly.", retry_after_s=OUTAGE_RETRY_AFTER_S)


__all__ = ["OUTAGE_ERRORS", "database_outage", "readiness"]
