"""A real Flywheel for one arm: `flywheel serve --no-worker` and `flywheel worker` as child
processes on a free loopback port, with a fresh data directory (SQLite) and an admin token.

The children's output goes to log files in the data directory; when something fails, the
tail of those logs is in the error.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class ServiceConfig:
    data_dir: Path
    base_model: str | None = None  # None: the children read FLYWHEEL_BASE_MODEL or use the default
    torch_threads: int = 0
    max_seq_len: int | None = None
    seed: int = 0
    startup_timeout_s: float = 180.0
    extra_env: dict[str, str] = field(default_factory=dict)


class Service:
    """Context manager: the API and worker running, `url` and `admin_token` set, until exit."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_urlsafe(24)
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def env(self) -> dict[str, str]:
        c = self.config
        env = dict(os.environ)
        env.update({
            "FLYWHEEL_DATA_DIR": str(c.data_dir),
            "FLYWHEEL_ADMIN_TOKEN": self.admin_token,
            "FLYWHEEL_HOST": "127.0.0.1",
            "FLYWHEEL_PORT": str(self.port),
            "FLYWHEEL_WORKER_POLL_S": "0.2",
            "FLYWHEEL_WATCH_INTERVAL_S": "0.2",
            "FLYWHEEL_HEARTBEAT_S": "2",
            "FLYWHEEL_HEARTBEAT_TIMEOUT_S": "600",
            "FLYWHEEL_EMBEDDED_WORKER": "false",
            "FLYWHEEL_TORCH_THREADS": str(c.torch_threads),
            "FLYWHEEL_SEED": str(c.seed),
            "FLYWHEEL_LOG_LEVEL": "warning",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        })
        env.pop("FLYWHEEL_DATABASE_URL", None)  # always the fresh SQLite file in data_dir
        if c.base_model:
            env["FLYWHEEL_BASE_MODEL"] = c.base_model
        if c.max_seq_len:
            env["FLYWHEEL_MAX_SEQ_LEN"] = str(c.max_seq_len)
        env.update(c.extra_env)
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = self.config.data_dir / f"{name}.log"
        self.logs[name] = log
        with log.open("ab") as fh:
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env,
                                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ServiceError(f"the {name} process exited with code {proc.returncode}:\n"
                                   f"{tail(self.logs[name])}")

    def start(self) -> "Service":
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        env = self.env()
        # Migrate the fresh database first, so the API and the worker (which both migrate at start,
        # a no-op by then) can start together without racing on one SQLite file.
        log = self.config.data_dir / "migrate.log"
        with log.open("ab") as fh:
            done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, stdout=fh,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise ServiceError(f"flywheel migrate failed with code {done.returncode}:\n{tail(log)}")
        self._spawn("api", ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(self.port)], env)
        self._spawn("worker", ["worker"], env)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise ServiceError(f"API not ready after {self.config.startup_timeout_s:g}s:\n{tail(self.logs['api'])}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> "Service":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
