"""The embedded worker of `flywheel serve`: a child process that lives exactly as long as the
API process.  It is restarted (with a growing delay) if it dies, it exits by itself within a
second of its parent going away however the parent went (SIGTERM, a crash, kill -9: it watches
its parent's pid, `flywheel worker --parent-pid`), and the API reports its state in `/readyz`
and `/metrics`.  Stdlib only."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("flywheel.supervisor")

FIRST_RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
STEADY_S = 60.0  # a child that lived this long resets the delay


class WorkerSupervisor:
    def __init__(self, command: Sequence[str], *, env: dict[str, str] | None = None,
                 stop_timeout_s: float = 30.0) -> None:
        self.command, self.env, self.stop_timeout_s = list(command), env, stop_timeout_s
        self.restarts = 0
        self.last_exit: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> "WorkerSupervisor":
        self._spawn()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self._thread.start()
        return self

    def _spawn(self) -> None:
        with self._lock:
            self._proc = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL)
            self._started = time.monotonic()
        log.info("embedded worker started (pid %d)", self._proc.pid)

    def _watch(self) -> None:
        delay = FIRST_RESTART_DELAY_S
        while not self._stopping.is_set():
            proc = self._proc
            assert proc is not None
            code = proc.wait()
            if self._stopping.is_set():
                return
            self.last_exit = code
            lived = time.monotonic() - self._started
            delay = FIRST_RESTART_DELAY_S if lived >= STEADY_S else min(delay * 2, MAX_RESTART_DELAY_S)
            log.error("embedded worker (pid %d) exited with code %s after %.0fs; restarting in %.0fs",
                      proc.pid, code, lived, delay)
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            self._spawn()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def status(self) -> dict[str, Any]:
        """What `/readyz` shows: whether it runs now, its pid, restarts so far, the last exit code."""
        return {"embedded": True, "alive": self.alive(), "pid": self._proc.pid if self._proc else None,
                "restarts": self.restarts, "last_exit": self.last_exit}

    def stop(self) -> None:
        """SIGTERM (a run in progress is requeued), then SIGKILL after `stop_timeout_s`.  Idempotent."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.stop_timeout_s)
