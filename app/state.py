"""What one API process holds: settings, database, served models, batchers, metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
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
