"""Starting a live Flywheel for tests and tools: a free loopback port, waiting until it
answers, `flywheel serve --no-worker` (and `flywheel worker`) as child processes, and an
ASGI app served by uvicorn in a thread.

Stdlib and httpx only (uvicorn when serving in a thread): it starts the app, it is not part
of it, so it takes an app object or a command line instead of importing the app.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

LOOPBACK = "127.0.0.1"


class LaunchError(RuntimeError):
    """A server did not come up, or one of its processes exited; the message has the log tail."""


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (the OS's choice).  Another process could take it
    before the caller binds it; on loopback in tests and tools that has not been a problem."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_up(url: str, *, alive: Callable[[], bool] = lambda: True, timeout_s: float = 180.0,
                  path: str = "/healthz", poll_s: float = 0.1, logs: Iterable[Path] = ()) -> None:
    """Until GET `url + path` answers 200.  /healthz: the process serves HTTP; /readyz: it also
    has every task's model loaded.  LaunchError (with the tails of `logs`) as soon as `alive()`
    is false, or after `timeout_s`: an upper bound to give up on, not a performance claim."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not alive():
            problem = f"the server behind {url} stopped before {path} answered"
            break
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            problem = f"{url}{path} did not answer 200 within {timeout_s:g}s"
            break
        time.sleep(poll_s)
    tails = "".join(f"\n--- {log.name}:\n{log_tail(log)}" for log in logs)
    raise LaunchError(problem + tails)


def flywheel_command() -> list[str]:
    """The `flywheel` script of this interpreter's environment, or `python -m app.cli`."""
    script = Path(sys.executable).with_name("flywheel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


class LocalService:
    """`flywheel serve --no-worker` on a free loopback port and, with `worker=True`, `flywheel
    worker` beside it, with their own FLYWHEEL_DATA_DIR, until `stop()` (or the `with` ends).

    The children's environment is the caller's without any FLYWHEEL_* variable (so a stray
    setting cannot change what a test or a benchmark measures), plus offline Hugging Face
    settings, plus `env`; data directory, host and port are always this service's.  Each
    child writes to `<log_dir>/<name>.log` (appended; default log_dir: the data directory);
    errors carry the tail.  `migrate=True` runs `flywheel migrate` first, so two processes do
    not both migrate one fresh SQLite file at the same moment.
    """

    def __init__(self, data_dir: Path, *, env: Mapping[str, str] | None = None, worker: bool = False,
                 migrate: bool = False, log_dir: Path | None = None, ready_path: str = "/healthz",
                 startup_timeout_s: float = 180.0, stop_timeout_s: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir) if log_dir is not None else self.data_dir
        self.extra_env = dict(env or {})
        self.worker, self.migrate = worker, migrate
        self.ready_path = ready_path
        self.startup_timeout_s, self.stop_timeout_s = startup_timeout_s, stop_timeout_s
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    @property
    def api(self) -> subprocess.Popen[bytes]:
        """The `flywheel serve` process."""
        return self.procs["api"]

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        env.update(self.extra_env)
        env.update(FLYWHEEL_DATA_DIR=str(self.data_dir), FLYWHEEL_HOST=LOOPBACK, FLYWHEEL_PORT=str(self.port))
        return env

    def start(self) -> LocalService:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            env = self.child_env()
            if self.migrate:
                log = self.log_dir / "migrate.log"
                with log.open("ab") as out:
                    done = subprocess.run(flywheel_command() + ["migrate"], env=env, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                if done.returncode != 0:
                    raise LaunchError(f"flywheel migrate failed with code {done.returncode}:\n{log_tail(log)}")
            self._spawn("api", ["serve", "--no-worker", "--host", LOOPBACK, "--port", str(self.port)], env)
            if self.worker:
                self._spawn("worker", ["worker"], env)
            try:
                wait_until_up(self.url, alive=self.alive, timeout_s=self.startup_timeout_s, path=self.ready_path,
                              poll_s=0.2, logs=[self.logs["api"]])
            except LaunchError:
                self.check_alive()  # a child that exited is the better message
                raise
            return self
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = self.logs[name] = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            self.procs[name] = subprocess.Popen(flywheel_command() + args, env=env, stdout=out,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs.values())

    def check_alive(self) -> None:
        """LaunchError naming the first child that has exited, with its log tail."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise LaunchError(f"the {name} process exited with code {proc.returncode}:\n"
                                  f"{log_tail(self.logs[name])}")

    def stop(self) -> None:
        """SIGTERM to every child (a graceful shutdown), then kill what is left after
        `stop_timeout_s`.  Safe to call twice."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cpu_s(self) -> float | None:
        """CPU seconds the API process has used so far (all its threads), where /proc exists."""
        try:
            stat = Path(f"/proc/{self.api.pid}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, KeyError, ValueError, IndexError):
            return None

    def __enter__(self) -> LocalService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def serve_in_thread(app: Any, *, timeout_s: float = 180.0, path: str = "/healthz",
                    options: Mapping[str, Any] | None = None) -> Iterator[str]:
    """Serve the ASGI `app` with uvicorn in a daemon thread on a loopback socket the OS chose
    (bound here and handed over, so no other process can take the port first); the base URL.
    The app's lifespan runs in that thread, and the server is shut down on the way out.
    `options` go to `uvicorn.Config` (`flywheel serve`'s connection limits, for instance)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    base = f"http://{LOOPBACK}:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **dict(options or {})))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until_up(base, alive=thread.is_alive, timeout_s=timeout_s, path=path, poll_s=0.05)
        yield base
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    if thread.is_alive():
        raise LaunchError("uvicorn did not shut down")
