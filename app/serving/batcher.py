"""Per-task asynchronous micro-batcher.

Requests queue with their own reply future.  One loop closes a batch when it holds
`max_batch_size` texts or `max_wait_ms` has passed since its first request, runs the
forward on the model's single inference thread (off the event loop), then hands the
whole batch to a commit step (one insert for the batch) before each request gets its
answer.  While one batch is in the forward, the next fills up, so load turns into
bigger batches instead of a longer queue.  Knows nothing of SQL or HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger("flywheel.batcher")

R = TypeVar("R")  # what the forward gives per text


class QueueFull(Exception):
    """The batcher already holds `max_queue` texts: shed load instead of queueing forever."""


class BatcherClosed(Exception):
    pass


@dataclass
class Pending:
    texts: list[str]
    context: Any
    future: asyncio.Future = field(repr=False)


# forward(texts) -> one result per text; runs on the inference thread.
ForwardFn = Callable[[list[str]], Sequence[R]]
# commit(requests, results per request) -> the answer per request; runs on the event loop.
CommitFn = Callable[[list[Pending], list[list[R]]], Awaitable[list[Any]]]
BatchObserver = Callable[[int, int], None]  # (texts in batch, queue depth after)


class MicroBatcher(Generic[R]):
    def __init__(
        self,
        name: str,
        forward: ForwardFn,
        commit: CommitFn,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 2048,
        enabled: bool = True,
        executor: ThreadPoolExecutor | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self._forward = forward
        self._commit = commit
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.enabled = enabled
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"infer-{name}")
        self._observer = observer
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._queued_texts = 0
        self._loop_task: asyncio.Task | None = None
        self._commits: set[asyncio.Task] = set()
        self._closed = False

    @property
    def depth(self) -> int:
        """Texts waiting for a forward."""
        return self._queued_texts

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def submit(self, texts: list[str], context: Any = None) -> Any:
        """Queue `texts` (one request) and wait for its committed answer."""
        if self._closed:
            raise BatcherClosed(self.name)
        if self._queued_texts + len(texts) > self.max_queue:
            raise QueueFull(self.name)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queued_texts += len(texts)
        self._queue.put_nowait(Pending(list(texts), context, fut))
        self.start()
        return await fut

    async def close(self) -> None:
        """Stop taking requests, answer everything already queued, then stop."""
        self._closed = True
        if self._loop_task is not None:
            while self._queued_texts and not self._loop_task.done():
                await asyncio.sleep(0.005)
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        if self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)
        if self._own_executor:
            self._executor.shutdown(wait=True)

    async def _collect(self) -> list[Pending]:
        first = await self._queue.get()
        batch, size = [first], len(first.texts)
        if not self.enabled:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while size < self.max_batch_size:
            if not self._queue.empty():
                item = self._queue.get_nowait()
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            self._queued_texts -= sum(len(p.texts) for p in batch)
            live = [p for p in batch if not p.future.done()]  # callers that gave up are skipped
            if not live:
                continue
            texts = [t for p in live for t in p.texts]
            if self._observer is not None:
                self._observer(len(texts), self._queued_texts)
            try:
                flat = await loop.run_in_executor(self._executor, self._forward, texts)
                per_request = _split(flat, live)
            except Exception:
                # One bad text must not fail its neighbours: retry each request on its own.
                log.warning("batch of %d failed on %s; retrying requests one by one", len(live), self.name)
                per_request, live = await self._one_by_one(live)
            if live:
                task = loop.create_task(self._finish(live, per_request))
                self._commits.add(task)
                task.add_done_callback(self._commits.discard)

    async def _one_by_one(self, batch: list[Pending]) -> tuple[list[list[R]], list[Pending]]:
        loop = asyncio.get_running_loop()
        ok_results, ok = [], []
        for p in batch:
            try:
                ok_results.append(list(await loop.run_in_executor(self._executor, self._forward, p.texts)))
                ok.append(p)
            except Exception as exc:  # noqa: BLE001 - handed to the caller that sent it
                _set(p.future, exc=exc)
        return ok_results, ok

    async def _finish(self, batch: list[Pending], results: list[list[R]]) -> None:
        try:
            answers = await self._commit(batch, results)
        except Exception as exc:  # nothing committed: every request in the batch fails
            for p in batch:
                _set(p.future, exc=exc)
            return
        for p, answer in zip(batch, answers):
            _set(p.future, value=answer)


def _split(flat: Sequence[R], batch: list[Pending]) -> list[list[R]]:
    out, i = [], 0
    for p in batch:
        out.append(list(flat[i : i + len(p.texts)]))
        i += len(p.texts)
    if i != len(flat):
        raise RuntimeError(f"forward returned {len(flat)} results for {i} texts")
    return out


def _set(fut: asyncio.Future, *, value: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
