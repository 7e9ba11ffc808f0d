"""Liveness, readiness and Prometheus metrics.

`/healthz` answers anyone: the process serves HTTP, and it says nothing else.  `/metrics` and
the details of `/readyz` name every tenant's tasks, versions, −1 shares and drift, so they are
the operator's: the admin token or `FLYWHEEL_METRICS_TOKEN` as a Bearer token, or anyone with
`FLYWHEEL_OPEN_METRICS` or in development mode.  Without them `/readyz` still answers 200 or 503
with its status alone, so a load balancer's or Kubernetes' probe needs no secret."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import StateDep
from app.api.problems import Problem
from app.core.errors import Unavailable
from app.core.security import same_secret
from app.services.health import readiness
from app.process.state import AppState
from app.observability.metrics import scrape

router = APIRouter(tags=["health"])


def operator_may_read(request: Request, state: AppState) -> bool:
    """Whether this request may read what spans every tenant (metrics, readiness details)."""
    settings = state.settings
    if settings.admin_token is None or settings.open_metrics:
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    return any(same_secret(token, secret) for secret in (settings.admin_token, settings.metrics_token)
               if secret is not None)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, state: StateDep) -> dict[str, object]:
    """Ready = the database answers and every task's active version is loaded here.  Which
    tasks, versions and engines: only to the admin or metrics token (see the module)."""
    if operator_may_read(request, state):
        return await readiness(state)
    try:
        await readiness(state)
    except Unavailable as exc:
        raise Unavailable("Not ready. The admin or metrics token sees why.", slug="not-ready", title="Not ready",
                          retry_after_s=exc.retry_after_s) from None
    return {"status": "ready"}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: StateDep) -> Response:
    if not operator_may_read(request, state):
        raise Problem(401, "unauthorized", "Unauthorized", "/metrics needs 'Authorization: Bearer <metrics or "
                      "admin token>' (FLYWHEEL_METRICS_TOKEN), or FLYWHEEL_OPEN_METRICS=true.",
                      field="Authorization", headers={"WWW-Authenticate": "Bearer"})
    return Response(await scrape(state.metrics, state.batchers), media_type=CONTENT_TYPE_LATEST)
