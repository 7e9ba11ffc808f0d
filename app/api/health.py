"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import StateDep
from app.services.health import readiness
from app.telemetry import scrape

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> dict[str, object]:
    """Ready = the database answers and every task's active version is loaded here."""
    return await readiness(state)


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    return Response(await scrape(state.metrics, state.batchers), media_type=CONTENT_TYPE_LATEST)
