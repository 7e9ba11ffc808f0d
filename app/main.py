"""FastAPI app factory; the lifespan owns start-up and shut-down of every moving part."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app import __version__
from app.api import openapi
from app.api.guards import BodyBudget, BodyLimit, LoopbackOnly
from app.api.schemas import ExamplesRequest
from app.api import (clients, examples, explain, feedback, health, noise, predict, problems, review, runs, tasks, users,
                     versions)
from app.core.config import Settings, get_settings
from app.console import routes as console
from app.db.migrate import upgrade
from app.db.session import make_engine, make_sessionmaker
from app.process.runtime import configure_runtime
from app.serving.registry import ServedModels
from app.process.state import AppState
from app.process.supervisor import WorkerSupervisor
from app.observability.metrics import DiskCollector, Metrics, MonitoringCollector, RunsCollector, WorkerCollector

log = logging.getLogger("flywheel")


def build_state(settings: Settings, worker: WorkerSupervisor | None = None) -> AppState:
    engine = make_engine(settings.db_url)
    sessions = make_sessionmaker(engine)
    metrics = Metrics()
    metrics.registry.register(RunsCollector(sessions))
    metrics.registry.register(DiskCollector(settings.models_dir))
    metrics.registry.register(MonitoringCollector(sessions, window=settings.drift_window,
                                                  worker_timeout_s=settings.heartbeat_timeout_s))
    if worker is not None:
        metrics.registry.register(WorkerCollector(worker.status))

    engines: dict[str, str] = {}

    def on_swap(loaded) -> None:
        metrics.model_version.labels(loaded.task).set(loaded.version)
        metrics.swaps.labels(loaded.task).inc()
        before = engines.get(loaded.task)
        if before is not None and before != loaded.engine:
            metrics.served_engine.remove(loaded.task, before)
        metrics.served_engine.labels(loaded.task, loaded.engine).set(1)
        engines[loaded.task] = loaded.engine

    served = ServedModels(sessions, device=settings.device, max_len=settings.max_seq_len,
                          chunk=settings.max_batch_size, on_swap=on_swap, engine=settings.engine)
    return AppState(settings=settings, engine=engine, sessions=sessions, served=served, metrics=metrics,
                    worker=worker)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.flywheel
    settings = state.settings
    configure_runtime(settings)
    log.info("migrating %s", state.engine.url.render_as_string(hide_password=True))
    await run_in_threadpool(upgrade, state.engine)
    log.info("loading active models (device %s)", state.served.device)
    await run_in_threadpool(state.served.sync_once)
    log.info("serving %d task(s); watching for new versions every %.1fs",
             len(state.served.loaded()), settings.watch_interval_s)
    state.background.append(asyncio.create_task(state.served.watch(settings.watch_interval_s), name="watcher"))
    try:
        yield
    finally:
        for t in state.background:
            t.cancel()
        await asyncio.gather(*state.background, return_exceptions=True)
        for b in list(state.batchers.values()):
            await b.close()
        state.explainer.close()
        if state.worker is not None:
            await run_in_threadpool(state.worker.stop)
        state.engine.dispose()
        log.info("stopped")


class RequestTiming:
    """Request latency by method, route and status, as a plain ASGI middleware.

    (`@app.middleware("http")` wraps every request in extra tasks and memory streams; on the
    predict and feedback paths that cost more CPU than the route's own work.)"""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            self.metrics.request_latency.labels(scope["method"], getattr(route, "path", "unmatched"),
                                                str(status)).observe(time.perf_counter() - started)


def create_app(settings: Settings | None = None, *, worker: WorkerSupervisor | None = None) -> FastAPI:
    """The app; `worker` is the embedded worker's supervisor when `flywheel serve` started one
    (its state is shown in /readyz and /metrics, and it is stopped with the app)."""
    settings = settings or get_settings()
    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from this server, not from a CDN
    # (Flywheel runs where nothing can be downloaded; a CDN page would be blank there).
    app = FastAPIOffline(
        title="Flywheel",
        version=__version__,
        description="A model server that learns from its users' feedback.",
        lifespan=lifespan,
    )
    app.state.flywheel = build_state(settings, worker)
    problems.install(app)
    openapi.install(app, body_models=(ExamplesRequest,))
    for module in (health, tasks, predict, explain, feedback, review, noise, examples, runs, versions, clients,
                   users):
        app.include_router(module.router)
    console.install(app)

    # Starlette runs the last one added first: timing sees every answer, then the development-mode
    # guard and the body limit refuse what they must before any route, auth or parsing.
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, upload_limit=settings.max_upload_bytes,
                       budget=BodyBudget(settings.max_buffered_bytes))
    if settings.admin_token is None:
        app.add_middleware(LoopbackOnly)
    app.add_middleware(RequestTiming, metrics=app.state.flywheel.metrics)
    # First of all: a trusted proxy's X-Forwarded-For/-Proto become the client's address (its
    # failed-authentication budget) and scheme (the console cookie's Secure flag), here rather
    # than in uvicorn, so the app behaves the same however it is served.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    return app
