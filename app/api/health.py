"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from app.api.deps import StateDep
from app.api.problems import Problem
from app.serving.registry import active_rows

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> dict[str, object]:
    """Ready = the database answers and every task's active version is loaded here."""
    def _rows():
        with state.sessions() as s:
            s.execute(text("SELECT 1"))
            return active_rows(s)

    try:
        rows = await run_in_threadpool(_rows)
    except Exception as exc:
        raise Problem(503, "not-ready", "Not ready", f"Database unreachable: {type(exc).__name__}.") from None
    loaded = state.registry.loaded()
    missing = [r.task for r in rows if r.task not in loaded]
    if missing:
        raise Problem(503, "not-ready", "Not ready", f"Models still loading: {', '.join(missing)}.",
                      headers={"Retry-After": "1"})
    return {"status": "ready", "models": {t: m.version for t, m in loaded.items()}}


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    for task, b in state.batchers.items():
        state.metrics.queue_depth.labels(task).set(b.depth)
    body = await run_in_threadpool(generate_latest, state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
