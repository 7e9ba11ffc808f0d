"""What one API process holds: settings, database, served models, batchers, metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.metrics import Metrics
from app.serving.batcher import MicroBatcher
from app.serving.registry import ModelRegistry


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    registry: ModelRegistry
    metrics: Metrics
    batchers: dict[str, MicroBatcher] = field(default_factory=dict)
    background: list[asyncio.Task] = field(default_factory=list)
