"""What one API process holds: settings, database, served models, batchers, metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.ratelimit import TokenBuckets
from app.process.supervisor import WorkerSupervisor
from app.serving.batcher import MicroBatcher
from app.serving.explain import Explainer
from app.serving.registry import ServedModels
from app.serving.scoring import Scored
from app.observability.metrics import Metrics


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    served: ServedModels
    metrics: Metrics
    batchers: dict[str, MicroBatcher[Scored]] = field(default_factory=dict)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    client_rates: TokenBuckets = field(init=False)  # requests per client key
    explain_rates: TokenBuckets = field(init=False)  # explanations per client key, besides its requests
    explainer: Explainer = field(init=False)  # explanations on their own threads and model copies
    auth_failures: TokenBuckets = field(init=False)  # failed authentications per source address
    worker: WorkerSupervisor | None = None  # the embedded worker, when `flywheel serve` started one
    feedback_group: Any = None  # the feedback GroupCommit (app/services/feedback.py), made on first use

    def __post_init__(self) -> None:
        s = self.settings
        self.client_rates = TokenBuckets(s.rate_limit_per_s, s.rate_limit_burst)
        self.auth_failures = TokenBuckets(s.auth_failures_per_s, s.auth_failures_burst)
        self.explain_rates = TokenBuckets(s.explain_rate_per_s, s.explain_burst)
        self.explainer = Explainer(current=self.served.current, load_copy=self.served.fp32_copy,
                                   workers=s.explain_workers, max_waiting=s.explain_queue,
                                   max_models=s.explain_models)
