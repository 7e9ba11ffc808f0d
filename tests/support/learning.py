"""Small builders for the learning-loop tests: a migrated database, a task with its zero-shot
version 0 on the tiny BERT, examples, clients, predictions with feedback, and a synthetic
two-class data set made of words the tiny vocabulary knows."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.db.migrate import upgrade
from app.db.tables import Client, Example, Feedback, ModelVersion, Prediction, Task
from app.db.session import make_engine, make_sessionmaker, transaction
from app.core.texts import split_for, text_hash
from app.db.versions import active_version, register_version
from app.kinds import load_version
from app.kinds.classification import predict_proba
from app.services.tasks import build_version_zero
from app.core.statuses import VersionStatus

LABELS = ["bank", "weather"]
WORDS = {
    "bank": "lost card credit stolen missing wallet bank account money charged twice bill billing invoice payment "
    "refund fee".split(),
    "weather": "weather rain sunny cold hot tomorrow today forecast snow wind".split(),
}
FILLER = "i my me you is the a and to of in for with please help can what need tell".split()

# Fast enough to learn the two-class problem on the tiny BERT in a few epochs; the gate decides on
# the few validation rows these loop tests have (its statistics are pinned down in test_gate.py).
FAST_POLICY = {"epochs": 6, "learning_rate": 3e-3, "batch_size": 8, "patience": 6, "gate_min_rows": 1}


def migrated(db_url: str) -> sessionmaker[Session]:
    engine = make_engine(db_url)
    upgrade(engine)
    return make_sessionmaker(engine)


def synthetic(n: int, seed: int = 0, labels: Sequence[str] = LABELS) -> list[tuple[str, str]]:
    """n distinct (text, label) pairs, labels alternating: two class words and two filler words."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(out) < n:
        label = labels[len(out) % len(labels)]
        words = rng.sample(WORDS[label], 2) + rng.sample(FILLER, 2)
        rng.shuffle(words)
        text = " ".join(words)
        if text_hash(text) not in seen:
            seen.add(text_hash(text))
            out.append((text, label))
    return out


def create_task(factory: sessionmaker[Session], settings: Settings, name: str = "intent", **fields: Any) -> int:
    """A task and its zero-shot version 0 (active), the way the API makes them."""
    fields.setdefault("kind", "classification")
    fields.setdefault("labels", list(LABELS))
    fields.setdefault("descriptions", {})
    with transaction(factory) as s:
        task = Task(name=name, **fields)
        s.add(task)
        s.flush()
        task_id = task.id
    with factory() as s:
        task = s.get(Task, task_id)
        path, sha = build_version_zero(task, base_model=settings.base_model, models_dir=settings.models_dir,
                                       max_seq_len=settings.max_seq_len)
    with transaction(factory) as s:
        register_version(s, task=s.get(Task, task_id), path=path, sha256=sha, version=0, status=VersionStatus.ACTIVE)
    return task_id


def add_examples(factory: sessionmaker[Session], task_id: int, pairs: Sequence[tuple[str, str]],
                 split: str | None = None) -> None:
    with transaction(factory) as s:
        for text, label in pairs:
            s.add(Example(task_id=task_id, text=text, label=label, split=split or split_for(text),
                          text_hash=text_hash(text)))


def add_client(factory: sessionmaker[Session], name: str) -> int:
    with transaction(factory) as s:
        client = Client(name=name, key_hash=text_hash(name + "-key"), key_prefix=name[:8])
        s.add(client)
        s.flush()
        return client.id


def add_feedback(
    factory: sessionmaker[Session],
    task_id: int,
    text: str,
    shown: str,
    signal: int,
    *,
    client_id: int | None = None,
    correction: str | None = None,
) -> int:
    """A prediction showing `shown` for `text` and one feedback row on it; returns the feedback id."""
    with transaction(factory) as s:
        version = active_version(s, task_id)
        pred = Prediction(task_id=task_id, model_version_id=version.id, client_id=client_id, text=text, label=shown,
                          scores={shown: 1.0})
        s.add(pred)
        s.flush()
        fb = Feedback(prediction_id=pred.id, task_id=task_id, client_id=client_id, signal=signal,
                      correction=correction)
        s.add(fb)
        s.flush()
        return fb.id


def active(factory: sessionmaker[Session], task_id: int) -> ModelVersion:
    with factory() as s:
        return active_version(s, task_id)


def versions(factory: sessionmaker[Session], task_id: int) -> list[ModelVersion]:
    with factory() as s:
        return list(s.scalars(select(ModelVersion).where(ModelVersion.task_id == task_id).order_by(ModelVersion.id)))


def accuracy_of(model: torch.nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]],
                labels: Sequence[str] = LABELS) -> float:
    probs = predict_proba(model, tokenizer, [t for t, _ in pairs], max_len=32, device=torch.device("cpu"))
    return sum(labels[i] == lab for i, (_, lab) in zip(probs.argmax(-1).tolist(), pairs)) / len(pairs)


def load(path: str | Path) -> tuple[torch.nn.Module, Any]:
    model, tokenizer, _ = load_version(Path(path), device=torch.device("cpu"))
    return model, tokenizer
