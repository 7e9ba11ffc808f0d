"""`flywheel serve --no-worker` as a child process on a free loopback port, for benchmarks.

Each server gets its own FLYWHEEL_DATA_DIR (and, when given, database URL); every other
FLYWHEEL_* variable of the caller is dropped so the numbers come from the defaults plus
what the benchmark sets on purpose.  Output goes to a log file whose tail is shown when
the server does not come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flywheel_command() -> list[str]:
    script = Path(sys.executable).with_name("flywheel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


class Server:
    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None, startup_s: float = 300.0) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"serve-{data_dir.name}-{self.port}.log"
        self.extra_env = env or {}
        self.startup_s = startup_s
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        env.update(FLYWHEEL_DATA_DIR=str(self.data_dir), FLYWHEEL_LOG_LEVEL="warning", HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        env.update(self.extra_env)
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                flywheel_command() + ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--no-worker"],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"flywheel serve did not come up; log tail:\n{self.tail()}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cpu_s(self) -> float | None:
        """CPU seconds the server process has used so far (all its threads), where /proc exists."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()  # type: ignore[union-attr]
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, AttributeError, ValueError, IndexError):
            return None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
