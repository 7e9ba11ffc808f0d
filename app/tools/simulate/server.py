"""A real Flywheel for one arm: `flywheel serve --no-worker` and `flywheel worker` as child
processes on a free loopback port (app.process.launch), with a fresh data directory (SQLite), an admin
token and the settings that make a simulated round quick (fast polling, quiet logs).

The children's output goes to log files in the data directory; when something fails, the
tail of those logs is in the error.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from app.process.launch import LocalService


@dataclass
class ServiceConfig:
    data_dir: Path
    base_model: str | None = None  # None: the children read FLYWHEEL_BASE_MODEL or use the default
    torch_threads: int = 0
    max_seq_len: int | None = None
    seed: int = 0
    startup_timeout_s: float = 180.0
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, admin_token: str) -> dict[str, str]:
        """The children's settings.  The caller's FLYWHEEL_* variables pass through (a base model
        chosen in the environment counts), except the database URL: always the fresh SQLite file."""
        env = {k: v for k, v in os.environ.items() if k.startswith("FLYWHEEL_") and k != "FLYWHEEL_DATABASE_URL"}
        env.update({
            "FLYWHEEL_ADMIN_TOKEN": admin_token,
            "FLYWHEEL_WORKER_POLL_S": "0.2",
            "FLYWHEEL_WATCH_INTERVAL_S": "0.2",
            "FLYWHEEL_HEARTBEAT_S": "2",
            "FLYWHEEL_HEARTBEAT_TIMEOUT_S": "600",
            "FLYWHEEL_EMBEDDED_WORKER": "false",
            "FLYWHEEL_TORCH_THREADS": str(self.torch_threads),
            "FLYWHEEL_SEED": str(self.seed),
            "FLYWHEEL_LOG_LEVEL": "warning",
            # Simulated users send as fast as the server answers; rate limits are not what it measures.
            "FLYWHEEL_RATE_LIMIT_PER_S": "0",
        })
        if self.base_model:
            env["FLYWHEEL_BASE_MODEL"] = self.base_model
        if self.max_seq_len:
            env["FLYWHEEL_MAX_SEQ_LEN"] = str(self.max_seq_len)
        env.update(self.extra_env)
        return env


class Service(LocalService):
    """Context manager: the API and worker running (the database migrated first, the API ready
    on /readyz), `url` and `admin_token` set, until exit."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.admin_token = secrets.token_urlsafe(24)
        super().__init__(config.data_dir, env=config.env(self.admin_token), worker=True, migrate=True,
                         ready_path="/readyz", startup_timeout_s=config.startup_timeout_s, stop_timeout_s=30.0)
