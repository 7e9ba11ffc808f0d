"""`flywheel serve | worker | migrate | retrain | bench | simulate`"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, TypedDict

import typer
from pydantic import ValidationError
from rich.console import Console

from app.core.config import Settings, get_settings
from app.core.security import is_loopback

cli = typer.Typer(help="Flywheel: a self-hosted model server that learns from its users.", no_args_is_help=True,
                  add_completion=False)
console = Console(stderr=True)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-5s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every poll at INFO


def _migrate(settings: Settings) -> None:
    """Safe to call from every process at start: PostgreSQL serialises it with an advisory lock."""
    from app.db.migrate import upgrade
    from app.db.session import make_engine

    engine = make_engine(settings.db_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def check_bind(settings: Settings, host: str) -> None:
    """Without an admin token anyone who can connect is admin, so only loopback is allowed."""
    if settings.admin_token is None and not is_loopback(host):
        console.print(f"[red]Refusing to listen on {host}: FLYWHEEL_ADMIN_TOKEN is not set, so every caller would "
                      "be admin. Set FLYWHEEL_ADMIN_TOKEN, or bind 127.0.0.1.[/red]")
        raise typer.Exit(2)
    if settings.admin_token is None:
        console.print("[yellow]FLYWHEEL_ADMIN_TOKEN is not set: listening on loopback only, and calls without a "
                      "token act as admin (development mode).[/yellow]")


class ConnectionLimits(TypedDict):
    limit_concurrency: int
    timeout_keep_alive: int


def connection_limits(settings: Settings) -> ConnectionLimits:
    """What uvicorn is told about connections, by `serve` and by the tests' live server: at most
    FLYWHEEL_MAX_CONNECTIONS open connections or requests in progress (uvicorn answers 503 past
    it, so slow clients cannot hold unbounded memory), and an idle keep-alive connection closed
    after FLYWHEEL_KEEP_ALIVE_S."""
    return {"limit_concurrency": settings.max_connections, "timeout_keep_alive": settings.keep_alive_s}


@cli.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Address to bind (default FLYWHEEL_HOST, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port (default FLYWHEEL_PORT, 8000)."),
    worker: Optional[bool] = typer.Option(None, "--worker/--no-worker",
                                          help="Start the training worker beside the API (default on)."),
) -> None:
    """Migrate the database, start the worker beside the API, and serve HTTP."""
    import uvicorn

    settings = get_settings()
    _logging(settings.log_level)
    host = host or settings.host
    port = port or settings.port
    check_bind(settings, host)
    _migrate(settings)
    from app.process.supervisor import WorkerSupervisor

    supervisor: WorkerSupervisor | None = None
    if settings.embedded_worker if worker is None else worker:
        supervisor = WorkerSupervisor([sys.executable, "-m", "app.cli", "worker", "--parent-pid", str(os.getpid())])
        supervisor.start()
        console.print(f"worker started beside the API (pid {supervisor.status()['pid']}); it stops with the API "
                      "and is restarted if it dies")
    console.print(f"Flywheel on http://{host}:{port}  (docs at /docs; data in {settings.data_dir}; "
                  f"database {settings.db_url.split('@')[-1]})")
    from app.main import create_app

    try:
        # The app's shutdown stops the worker (uvicorn re-raises SIGTERM after it, so code after
        # run() may never execute); should this process die harder, the worker sees its parent go.
        uvicorn.run(create_app(settings, worker=supervisor), host=host, port=port, log_level=settings.log_level,
                    access_log=False, proxy_headers=False,  # the app reads them (FLYWHEEL_FORWARDED_ALLOW_IPS)
                    **connection_limits(settings))
    finally:
        if supervisor is not None:
            supervisor.stop()


@cli.command()
def worker(
    parent_pid: Optional[int] = typer.Option(None, "--parent-pid", hidden=True,
                                             help="Exit when this process is no longer our parent."),
) -> None:
    """Run the training worker: retrain policy, run queue, heartbeats."""
    settings = get_settings()
    _logging(settings.log_level)
    from app.process.runtime import configure_runtime
    from app.process.worker import run_worker

    configure_runtime(settings)
    _migrate(settings)
    run_worker(settings, metrics_port=settings.worker_metrics_port or None, parent_pid=parent_pid)


@cli.command()
def migrate() -> None:
    """Apply database migrations up to the newest."""
    settings = get_settings()
    _logging(settings.log_level)
    _migrate(settings)
    console.print(f"database at head: {settings.db_url.split('@')[-1]}")


@cli.command()
def retrain(
    task: str = typer.Argument(..., help="Task name."),
    wait: bool = typer.Option(False, "--wait", help="Follow the run with a progress bar until it ends."),
    url: Optional[str] = typer.Option(None, help="Server URL (default http://FLYWHEEL_HOST:FLYWHEEL_PORT)."),
) -> None:
    """Queue a training run for TASK through the API (admin), optionally waiting for its verdict."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from app.tools.client import ApiError, FlywheelClient
    from app.core.statuses import FINAL_RUN_STATUSES

    settings = get_settings()
    base = url or f"http://{settings.host}:{settings.port}"
    with FlywheelClient(base, settings.admin_token, timeout_s=30) as api:
        try:
            run_id, created = api.retrain(task)  # a run already queued or running is joined
        except ApiError as exc:
            raise SystemExit(f"retrain refused ({exc.status}): {exc.detail}") from None
        console.print(f"run {run_id} {'queued' if created else 'already queued or running'} for task {task!r}")
        if not wait:
            return
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn())
        with Progress(*columns, console=console) as bar:
            job = bar.add_task(f"run {run_id}", total=1.0, info="queued")

            def show(run: dict) -> None:
                p = run.get("progress") or {}
                total = p.get("total_steps") or 0
                done = (p.get("step") or 0) / total if total else 0.0
                loss = p.get("loss")
                info = run["status"] + (f" epoch {p.get('epoch')} loss {loss:.4f}"
                                        if isinstance(loss, (int, float)) else "")
                final = run["status"] in FINAL_RUN_STATUSES
                bar.update(job, completed=1.0 if final else min(done, 0.99), info=info)

            run = api.wait_run(run_id, poll_s=1.0, on_poll=show)
    console.print(f"run {run_id}: [bold]{run['status']}[/bold] {run.get('gate', {}).get('reason', '') or ''}")
    if run["status"] == "failed":
        console.print(f"[red]{run.get('error')}[/red]")
        raise typer.Exit(1)


from app.tools.simulate.command import combine_results, simulate  # noqa: E402  (heavy imports wait until run)

cli.command()(simulate)
cli.command("simulate-combine")(combine_results)


from app.tools.bench.command import bench_app  # noqa: E402  (heavy imports wait until a benchmark runs)

cli.add_typer(bench_app, name="bench")


# torch's OpenMP runtime (libgomp) spins 300,000 times at every barrier while a process has no
# more OpenMP threads than cores.  The moment anything else wants a core (the API's event loop,
# a worker training beside it, another process) that spinning turns a forward or a training
# step 3-10x slower; 100 spins (what libgomp itself uses once oversubscribed) does not.  Set
# before torch loads, for every command; an explicit GOMP_SPINCOUNT wins.  See docs/bench.md.
OPENMP_SPINCOUNT = "100"


def main() -> None:
    os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)
    try:
        cli()
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise
        for error in exc.errors():  # a setting out of bounds: which one and why, not a traceback
            name = "FLYWHEEL_" + "_".join(str(part) for part in error["loc"]).upper()
            said = error["msg"].removeprefix("Value error, ")
            console.print(f"[red]{said if said.startswith(name) else f'{name}: {said}'}[/red]")
        sys.exit(2)


if __name__ == "__main__":
    main()
