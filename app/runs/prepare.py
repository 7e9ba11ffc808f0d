"""Preparing a version's inference engines in the worker (app/serving/engines.py does the
work): for a candidate about to be promoted, and for any active version that has none yet (a
task's version 0, or versions stored before engines existed), so a fresh deployment serves the
fastest engine without anyone asking."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.db.session import transaction
from app.db.tables import Example, ModelVersion
from app.model.encoder import resolve_device
from app.serving.engines import PROBE_MAX_TEXTS, prepare_engines
from app.core.statuses import VersionStatus

log = logging.getLogger(__name__)

MIN_PROBE_TEXTS = 64
# Used beside the task's validation texts when it has few (version 0 has none): varied lengths
# and topics, so parity and timing see more than one shape of input.
PROBE_TEXTS = (
    "I lost my card yesterday and need a new one", "Will it rain in Paris tomorrow?",
    "The movie was a complete waste of two hours.", "Absolutely loved the service, thank you!",
    "How do I reset my password?", "My package never arrived and nobody answers the phone.",
    "Set an alarm for six thirty", "What is the exchange rate between euros and dollars today",
    "The food was cold, the waiter rude, and the bill wrong.", "Quick question about my invoice",
    "Barack Obama visited Berlin in 2013.", "Apple released a new iPhone in California on Tuesday.",
    "ok", "Thanks!", "This is fine, I guess, nothing special.", "Can you transfer 200 dollars to my savings account",
    "The battery dies after two hours, which is unacceptable for a phone this expensive.",
    "Book a table for four at an Italian restaurant near the station at eight tonight, please.",
    "Is my flight to Tokyo on time?", "I want to cancel my subscription and get a refund for this month.",
    "Great acting, weak plot, beautiful music.", "Who won the football game last night?",
    "Please update my shipping address to 42 Main Street, Springfield.", "The hotel room smelled of smoke.",
    "Remind me to call Maria on Friday", "What's the best way to learn to play the guitar as an adult?",
    "The new update broke the app: it crashes every time I open the camera.", "Translate hello into Spanish",
    "My credit card was charged twice for the same order", "An unforgettable, moving film.",
    "Play some jazz", "The delivery driver left the parcel in the rain and everything inside got wet.",
)


def probe_texts(session: Session, task_id: int, extra: Sequence[str] = ()) -> list[str]:
    """The task's validation texts (or `extra`, the run's own), topped up with PROBE_TEXTS."""
    texts = list(dict.fromkeys(extra))[:PROBE_MAX_TEXTS]
    if len(texts) < PROBE_MAX_TEXTS:
        texts += [t for t in session.scalars(select(Example.text).where(Example.task_id == task_id,
                                                                        Example.split == "validation")
                                             .order_by(Example.id).limit(PROBE_MAX_TEXTS - len(texts)))
                  if t not in texts]
    if len(texts) < MIN_PROBE_TEXTS:
        texts += [t for t in PROBE_TEXTS if t not in texts]
    return texts


def engines_for(settings: Settings, version_dir: Path, texts: Sequence[str]) -> dict[str, Any]:
    """The engine record for a stored version; a failure to prepare any is recorded, never raised
    (the version then serves on PyTorch)."""
    device = resolve_device(settings.device)
    try:
        return prepare_engines(version_dir, texts=texts, device=device, max_len=settings.max_seq_len,
                               chunk=settings.max_batch_size)
    except Exception as exc:
        log.exception("could not prepare engines for %s", version_dir)
        return {"device": device.type, "chosen": None, "candidates": {}, "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def backfill_engines(factory: sessionmaker[Session], settings: Settings) -> list[int]:
    """Prepare engines for every active version that has none; the ids done."""
    with factory() as s:
        todo = [(v.id, v.task_id, v.path) for v in s.scalars(
            select(ModelVersion).where(ModelVersion.status == VersionStatus.ACTIVE))
            if not v.engines]
    done = []
    for version_id, task_id, path in todo:
        with factory() as s:
            texts = probe_texts(s, task_id)
        record = engines_for(settings, Path(path), texts)
        with transaction(factory) as s:
            v = s.get(ModelVersion, version_id)
            if v is not None and not v.engines:
                v.engines = record
                done.append(version_id)
        log.info("engines for version id %d: chose %s", version_id, record.get("chosen"))
    return done
