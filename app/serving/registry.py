"""The models this API process serves, one active version per task, and the hot swap.

(In memory, per process.  The versions themselves, and which one is active, are rows in the
database: `app/db/versions.py`.)

A watcher polls the database for each task's active version.  When it changes, the new
version is loaded and warmed on a loader thread, off the request path, and then one dict
entry is replaced.  A forward reads the entry once at its start, so batches already in
flight finish on the old model and every answer names the version that produced it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.db.versions import ActiveRow, active_rows, served_row
from app.model.encoder import resolve_device
from app.serving.scoring import LoadedModel, Scored, score_texts
from app.serving.engines import choose, load_engine, load_for_serving
from app.serving.priority import lower_priority

__all__ = ["ServedModels", "LoadedModel", "Scored"]

log = logging.getLogger("flywheel.served")


class ServedModels:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        device: str = "auto",
        max_len: int = 128,
        chunk: int = 32,
        on_swap: Any = None,
        engine: str = "auto",
    ) -> None:
        self._sessions = sessions
        self.device = resolve_device(device)
        self.engine = engine  # FLYWHEEL_ENGINE: auto | onnx | torch
        self.max_len = max_len
        self.chunk = chunk
        self._models: dict[str, LoadedModel] = {}
        self._load_lock = threading.Lock()
        # Loads run on their own low-priority thread: a swap under load then takes CPU from
        # the inference thread only when that thread does not want it.
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="model-loader", initializer=lower_priority)
        self._on_swap = on_swap
        self.synced = False  # True once every active version seen at start is loaded
        # Versions that could not be loaded (missing or corrupt files), by id: never retried, so a
        # bad activation is one logged error, not a reload every poll.
        self.unloadable: dict[int, str] = {}

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
            if cur is not None and cur.version_id == row.version_id and cur.task_id == row.task_id and (
                    cur.wanted == self._wanted(row)):
                continue  # (an engine prepared for the served version since it was loaded: reload on it)
            if row.version_id in self.unloadable and cur is not None:
                continue  # known bad: keep serving what we have
            with self._load_lock:
                cur = self._models.get(row.task)
                if cur is not None and cur.version_id == row.version_id and cur.wanted == self._wanted(row):
                    continue
                loaded = self._load_or_fall_back(row, serving=cur)
                if loaded is not None and (cur is None or loaded.version_id != cur.version_id
                                           or loaded.wanted != cur.wanted):
                    self._install(loaded)
                    swapped += 1
        known = {r.task for r in rows}
        for name in [t for t in self._models if t not in known]:
            self._models.pop(name, None)  # task deleted
        self.synced = True
        return swapped

    def _wanted(self, row: ActiveRow) -> str:
        return choose(row.engines, self.engine, self.device, row.quantize)[0]

    def _load(self, row: ActiveRow) -> LoadedModel | None:
        """One version, or None (recorded in `unloadable`, logged once) when it cannot be loaded."""
        if row.version_id in self.unloadable:
            return None
        started = time.perf_counter()
        try:
            loaded = load_for_serving(row, device=self.device, max_len=self.max_len, engine=self.engine)
        except Exception as exc:
            self.unloadable[row.version_id] = f"version {row.version}: {exc}"[:500]
            log.error("could not load version %d of task %s (%s); it will not be retried", row.version, row.task,
                      exc)
            return None
        log.info("loaded %s v%d in %.2fs", row.task, row.version, time.perf_counter() - started)
        return loaded

    def _load_or_fall_back(self, row: ActiveRow, *, serving: LoadedModel | None) -> LoadedModel | None:
        """The active version; if it cannot be loaded, keep what is served, or (nothing served
        yet: at start) the nearest ancestor that loads, so the task still answers."""
        loaded = self._load(row)
        if loaded is not None or serving is not None:
            return loaded
        parent = row.parent_id
        while parent is not None:
            with self._sessions() as session:
                older = served_row(session, parent)
            if older is None:
                break
            loaded = self._load(older)
            if loaded is not None:
                log.warning("task %s serves version %d in place of its unloadable active version %d",
                            row.task, older.version, row.version)
                return loaded
            parent = older.parent_id
        return None

    def fp32_copy(self, loaded: LoadedModel) -> LoadedModel | None:
        """A new PyTorch fp32 copy of the version `loaded` serves, that no serving thread holds
        (what an explanation hooks and differentiates: app/serving/explain.py); None when the
        version is gone."""
        with self._sessions() as session:
            row = served_row(session, loaded.version_id)
        if row is None:
            return None
        return load_engine(row, "torch-fp32", device=self.device, max_len=self.max_len)

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
