"""Group commit: many concurrent small writes in one transaction.

Callers `submit` one item each and wait.  Whatever queued while the previous transaction ran
goes into the next one, so under load the number of commits stays near one per round trip
however many requests arrive, and alone a caller waits for nothing but its own commit.  Each
caller still hears back only after its row is committed (or gets its own error: `commit`
returns an exception in that item's place)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from app.db.threads import in_db_thread

log = logging.getLogger("flywheel.group")

T = TypeVar("T")
R = TypeVar("R")

# commit(items) -> one result or exception per item, in order; runs on the DB thread pool
CommitMany = Callable[[Sequence[T]], Sequence["R | Exception"]]


class GroupCommit(Generic[T, R]):
    def __init__(self, commit: CommitMany[T, R], *, max_items: int = 256,
                 observe: Callable[[int], None] | None = None) -> None:
        self._commit, self.max_items, self._observe = commit, max_items, observe
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        while self._queue:
            group, self._queue = self._queue[: self.max_items], self._queue[self.max_items:]
            if self._observe is not None:
                self._observe(len(group))
            results: Sequence[R | Exception]
            try:
                results = await in_db_thread(self._commit, [item for item, _ in group])
            except Exception as exc:
                log.warning("group commit of %d items failed: %r", len(group), exc)
                results = [exc] * len(group)
            for (_, fut), result in zip(group, results):
                if fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
