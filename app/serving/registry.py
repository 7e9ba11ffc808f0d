"""The models this API process serves, one active version per task, and the hot swap.

A watcher polls the database for each task's active version.  When it changes, the new
version is loaded and warmed on a loader thread, off the request path, and then one dict
entry is replaced.  A forward reads the entry once at its start, so batches already in
flight finish on the old model and every answer names the version that produced it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ModelVersion, Task
from app.serving.artifacts import load_version
from app.serving.model import predict_proba_ids, resolve_device

log = logging.getLogger("flywheel.registry")


@dataclass(frozen=True)
class ActiveRow:
    task_id: int
    task: str
    version_id: int
    version: int
    path: str
    quantize: bool


@dataclass
class LoadedModel:
    task_id: int
    task: str
    version_id: int
    version: int
    labels: list[str]
    model: torch.nn.Module
    tokenizer: Any
    device: torch.device
    max_len: int
    quantized: bool = False


@dataclass(frozen=True)
class Scored:
    """One text's answer and the exact version that gave it."""

    model: LoadedModel
    label: str
    scores: dict[str, float]


def prepare_for_inference(model: torch.nn.Module, device: torch.device, quantize: bool) -> tuple[torch.nn.Module, bool]:
    """fp16 on CUDA; optional int8 dynamic quantisation of the Linear layers on CPU.

    Weights are quantised per output channel: with one scale per tensor, zero-shot SST-2
    lost about 2 accuracy points against fp32; per channel it stays within a fraction of a
    point and runs as fast (see bench/README.md)."""
    if device.type == "cuda":
        return model.half(), False
    if quantize:
        import warnings

        with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}), True
    return model, False


def load_for_serving(row: ActiveRow, *, device: torch.device, max_len: int) -> LoadedModel:
    model, tokenizer, meta = load_version(Path(row.path), device=device)
    model, quantized = prepare_for_inference(model, device, row.quantize)
    loaded = LoadedModel(
        task_id=row.task_id,
        task=row.task,
        version_id=row.version_id,
        version=row.version,
        labels=list(meta.labels),
        model=model,
        tokenizer=tokenizer,
        device=device,
        max_len=min(max_len, meta.max_seq_len or max_len),
        quantized=quantized,
    )
    score_texts(loaded, ["warm up the kernels"], chunk=1)  # first call allocates; keep it off the request path
    return loaded


# Padded tokens per forward on CPU.  A micro-batch of 32 SST-2-like texts (25 tokens on
# average, up to ~60) padded as one block spends a third of its compute on padding; cut into
# length-sorted chunks of at most this many padded tokens it runs 35-50% faster on a 2-core
# CPU (bench/README.md).  On CUDA one big block is better, so there the count limit alone holds.
CPU_CHUNK_TOKENS = 512


def chunk_bounds(lengths: Sequence[int], *, max_rows: int, max_tokens: int | None) -> list[tuple[int, int]]:
    """Cut rows sorted by ascending length into [start, end) chunks of at most `max_rows` rows
    and at most `max_tokens` padded tokens (rows x longest row); a single row always fits."""
    bounds, start = [], 0
    while start < len(lengths):
        end = start + 1
        while end < len(lengths) and end - start < max_rows and (
            max_tokens is None or (end - start + 1) * lengths[end] <= max_tokens
        ):
            end += 1
        bounds.append((start, end))
        start = end
    return bounds


def score_texts(loaded: LoadedModel, texts: Sequence[str], *, chunk: int,
                max_tokens: int | None = None) -> list[Scored]:
    """Tokenise once, forward in length-sorted chunks (little padding), answers in the original order."""
    tok = loaded.tokenizer
    ids = tok(list(texts), truncation=True, max_length=loaded.max_len)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    if max_tokens is None and loaded.device.type == "cpu":
        max_tokens = CPU_CHUNK_TOKENS
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[Scored | None] = [None] * len(texts)
    labels = loaded.labels
    for start, end in chunk_bounds([len(ids[i]) for i in order], max_rows=chunk, max_tokens=max_tokens):
        idx = order[start:end]
        probs = predict_proba_ids(loaded.model, [ids[i] for i in idx], pad_id=pad_id, device=loaded.device)
        for i, row in zip(idx, probs.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            out[i] = Scored(loaded, labels[best], {lab: round(p, 6) for lab, p in zip(labels, row)})
    return out  # type: ignore[return-value]


def active_rows(session: Session) -> list[ActiveRow]:
    stmt = (
        select(Task.id, Task.name, ModelVersion.id, ModelVersion.version, ModelVersion.path, Task.quantize)
        .join(ModelVersion, (ModelVersion.task_id == Task.id) & (ModelVersion.status == "active"))
        .order_by(Task.id)
    )
    return [ActiveRow(*r) for r in session.execute(stmt).all()]


LOADER_NICENESS = 10


def _lower_priority() -> None:
    """Lower this thread's scheduling priority (Linux: niceness is per thread; threads it
    starts, such as its OpenMP team, inherit it).  Elsewhere a no-op."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOADER_NICENESS)
    except (AttributeError, OSError):
        pass


class ModelRegistry:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        device: str = "auto",
        max_len: int = 128,
        chunk: int = 32,
        on_swap: Any = None,
    ) -> None:
        self._sessions = sessions
        self.device = resolve_device(device)
        self.max_len = max_len
        self.chunk = chunk
        self._models: dict[str, LoadedModel] = {}
        self._load_lock = threading.Lock()
        # Loads run on their own low-priority thread: a swap under load then takes CPU from
        # the inference thread only when that thread does not want it.
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="model-loader", initializer=_lower_priority)
        self._on_swap = on_swap
        self.synced = False  # True once every active version seen at start is loaded

    def current(self, task: str) -> LoadedModel | None:
        return self._models.get(task)

    def loaded(self) -> dict[str, LoadedModel]:
        return dict(self._models)

    def forward(self, task: str, texts: list[str]) -> list[Scored]:
        """Runs on the inference thread.  Reads the model reference once: a swap mid-batch is harmless."""
        loaded = self._models.get(task)
        if loaded is None:
            raise LookupError(f"no model loaded for task {task!r}")
        return score_texts(loaded, texts, chunk=self.chunk)

    def _install(self, loaded: LoadedModel) -> None:
        old = self._models.get(loaded.task)
        self._models[loaded.task] = loaded
        log.info("task %s now serves version %d (id %d)%s", loaded.task, loaded.version, loaded.version_id,
                 f", was {old.version}" if old else "")
        if self._on_swap is not None:
            self._on_swap(loaded)

    def sync_once(self) -> int:
        """Load every active version that differs from what is served; returns how many swapped."""
        with self._sessions() as session:
            rows = active_rows(session)
        swapped = 0
        for row in rows:
            cur = self._models.get(row.task)
            if cur is not None and cur.version_id == row.version_id and cur.task_id == row.task_id:
                continue
            with self._load_lock:
                cur = self._models.get(row.task)
                if cur is not None and cur.version_id == row.version_id:
                    continue
                started = time.perf_counter()
                try:
                    loaded = load_for_serving(row, device=self.device, max_len=self.max_len)
                except Exception:
                    log.exception("could not load version %d of task %s; still serving the old one",
                                  row.version, row.task)
                    continue
                log.info("loaded %s v%d in %.2fs", row.task, row.version, time.perf_counter() - started)
                self._install(loaded)
                swapped += 1
        known = {r.task for r in rows}
        for name in [t for t in self._models if t not in known]:
            self._models.pop(name, None)  # task deleted
        self.synced = True
        return swapped

    async def ensure(self, task: str) -> LoadedModel | None:
        """The task's model, loading it now if this process has not seen it yet."""
        loaded = self._models.get(task)
        if loaded is None:
            await asyncio.get_running_loop().run_in_executor(self._loader, self.sync_once)
            loaded = self._models.get(task)
        return loaded

    async def watch(self, interval_s: float) -> None:
        """Poll for new active versions until cancelled."""
        while True:
            try:
                await asyncio.get_running_loop().run_in_executor(self._loader, self.sync_once)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model watcher failed; retrying")
            await asyncio.sleep(interval_s)
