"""What one API process holds: settings, database, served models, batchers, metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.ratelimit import TokenBuckets
from app.supervisor import WorkerSupervisor
from app.serving.batcher import MicroBatcher
from app.serving.served import ServedModels
from app.telemetry import Metrics


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    served: ServedModels
    metrics: Metrics
    batchers: dict[str, MicroBatcher] = field(default_factory=dict)
    background: list[asyncio.Task] = field(default_factory=list)
    client_rates: TokenBuckets = field(init=False)  # requests per client key
    auth_failures: TokenBuckets = field(init=False)  # failed authentications per source address
    worker: WorkerSupervisor | None = None  # the embedded worker, when `flywheel serve` started one
    feedback_group: Any = None  # the feedback GroupCommit (app/services/feedback.py), made on first use

    def __post_init__(self) -> None:
        s = self.settings
        self.client_rates = TokenBuckets(s.rate_limit_per_s, s.rate_limit_burst)
        self.auth_failures = TokenBuckets(s.auth_failures_per_s, s.auth_failures_burst)
