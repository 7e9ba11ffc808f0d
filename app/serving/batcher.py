"""Per-task asynchronous micro-batcher.

Requests queue with their own reply future.  One loop closes a batch when it holds
`max_batch_size` texts or `max_wait_ms` after it opened, runs the forward on the model's
single inference thread (off the event loop), then hands the batch to a commit step (one
insert for the batch) before each request gets its answer.  A batch opens when a request
is waiting *and* the model is free: waiting while the model is busy costs nothing, so the
clock only starts once it would cost.  The commit runs beside the next forward, and while
one forward runs the next batch fills up, so load turns into bigger batches instead of a
longer queue.  (Timed from the first arrival instead, 32 closed-loop callers settle into two
cohorts of 16 that take turns, each batch leaving the moment the model frees up; timed from
the free model, the cohorts merge and each text costs less.)

Waiting only pays when other callers are around: the batcher keeps a moving average of
how often a request arrives while another is still unanswered, and when that is rare (one
caller at a time, or light traffic) it closes a batch at once instead of making a lone
caller wait `max_wait_ms` for company that is not coming.

Clients share the model fairly: each request names its owner (a client), every owner has its
own line, batches take requests from the lines in turn, and one owner may hold at most
`max_queue_per_owner` texts, so a client that floods a task fills its own line, not everyone's.

A request is never split across batches and never pushes a batch past `max_batch_size`
(unless it alone is bigger).  Callers that gave up (cancelled) are skipped.  An error in
the forward is retried request by request, so one bad text fails only its own request.
Knows nothing of SQL or HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger("flywheel.batcher")

R = TypeVar("R")  # what the forward gives per text

COMPANY_SMOOTHING = 0.2  # weight of the newest arrival in the "had company" moving average


class QueueFull(Exception):
    """The batcher already holds `max_queue` texts: shed load instead of queueing forever."""


class OwnerQueueFull(QueueFull):
    """This owner already holds its share (`max_queue_per_owner`) of the queue; others may still queue."""


class BatcherClosed(Exception):
    pass


@dataclass
class Pending:
    texts: list[str]
    context: Any
    future: asyncio.Future = field(repr=False)
    arrived: float = 0.0  # loop time
    owner: Hashable = None  # whose line it waits in


# forward(texts) -> one result per text; runs on the inference thread.
ForwardFn = Callable[[list[str]], Sequence[R]]
# commit(requests, results per request) -> the answer (or an exception) per request; runs on the event loop.
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
        max_queue_per_owner: int | None = None,
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
        self.max_queue_per_owner = max_queue_per_owner or max_queue
        self.enabled = enabled
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"infer-{name}")
        self._observer = observer
        # owner -> its line; dict order is the turn order (the owner served last moves to the end)
        self._lines: dict[Hashable, deque[Pending]] = {}
        self._owner_texts: dict[Hashable, int] = {}
        self._wakeup: asyncio.Event | None = None
        self._queued_texts = 0
        self._outstanding = 0  # requests submitted and not yet answered
        self._unanswered: set[asyncio.Future] = set()
        self._company = 0.5  # moving share of arrivals that found another request unanswered
        self._loop_task: asyncio.Task | None = None
        self._commits: set[asyncio.Task] = set()
        self._closed = False
        self.forwards = 0  # forward calls made (batches), for tests and metrics

    @property
    def depth(self) -> int:
        """Texts waiting for a forward."""
        return self._queued_texts

    def start(self) -> None:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def submit(self, texts: list[str], context: Any = None, owner: Hashable = None) -> Any:
        """Queue `texts` (one request) in `owner`'s line and wait for its committed answer."""
        if self._closed:
            raise BatcherClosed(self.name)
        if self._owner_texts.get(owner, 0) + len(texts) > self.max_queue_per_owner:
            raise OwnerQueueFull(self.name)
        if self._queued_texts + len(texts) > self.max_queue:
            raise QueueFull(self.name)
        loop = asyncio.get_running_loop()
        self._company += COMPANY_SMOOTHING * ((1.0 if self._outstanding else 0.0) - self._company)
        fut: asyncio.Future = loop.create_future()
        self._queued_texts += len(texts)
        self._owner_texts[owner] = self._owner_texts.get(owner, 0) + len(texts)
        self._lines.setdefault(owner, deque()).append(Pending(list(texts), context, fut, loop.time(), owner))
        self.start()
        self._wakeup.set()  # type: ignore[union-attr]
        self._outstanding += 1
        self._unanswered.add(fut)
        try:
            return await fut
        finally:
            self._outstanding -= 1
            self._unanswered.discard(fut)

    async def settled(self) -> None:
        """Return once every request submitted before this call has its answer (committed or failed)."""
        if self._unanswered:
            await asyncio.wait(set(self._unanswered))

    async def close(self) -> None:
        """Stop taking requests, answer everything already queued or in flight, then stop."""
        self._closed = True
        if self._loop_task is not None and not self._loop_task.done():
            self._wakeup.set()  # type: ignore[union-attr]
            await asyncio.shield(self._loop_task)
        for line in self._lines.values():  # only if the loop died: nobody may wait forever
            for p in line:
                _set(p.future, exc=BatcherClosed(self.name))
        self._lines.clear()
        self._owner_texts.clear()
        self._queued_texts = 0
        if self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)
        if self._own_executor:
            self._executor.shutdown(wait=False)

    # ------------------------------------------------------------ the loop

    def _peek(self) -> Pending | None:
        """The request whose turn is next (the oldest of the next owner's line)."""
        for line in self._lines.values():
            return line[0]
        return None

    def _pop(self) -> Pending:
        """Take the next request off its owner's line; that owner goes to the back of the turn order."""
        owner = next(iter(self._lines))
        line = self._lines.pop(owner)
        p = line.popleft()
        if line:
            self._lines[owner] = line
        self._queued_texts -= len(p.texts)
        left = self._owner_texts[owner] - len(p.texts)
        if left:
            self._owner_texts[owner] = left
        else:
            del self._owner_texts[owner]
        return p

    def _pop_live(self) -> Pending | None:
        """The next request whose caller still waits; skipped ones leave the count."""
        while self._lines:
            p = self._pop()
            if not p.future.done():
                return p
        return None

    async def _collect(self) -> list[Pending] | None:
        """The next batch, or None once closed and drained."""
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        model_free = loop.time()
        while True:
            first = self._pop_live()
            if first is not None:
                break
            if self._closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        batch, size = [first], len(first.texts)
        if not self.enabled:
            return batch
        deadline = max(first.arrived, model_free) + self.max_wait
        while size < self.max_batch_size:
            nxt = self._peek()
            if nxt is not None:
                if nxt.future.done():
                    self._pop()
                    continue
                if size + len(nxt.texts) > self.max_batch_size:
                    break  # it opens the next batch instead
                batch.append(self._pop())
                size += len(nxt.texts)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed or self._company < 0.5:
                break  # out of time, shutting down, or callers mostly come alone
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if batch is None:
                return
            try:
                await self._process(batch)
            except Exception as exc:
                log.exception("batch on %s failed unexpectedly", self.name)
                for p in batch:
                    _set(p.future, exc=exc)

    async def _process(self, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        texts = [t for p in batch for t in p.texts]
        if self._observer is not None:
            self._observer(len(texts), self._queued_texts)
        try:
            self.forwards += 1
            flat = await loop.run_in_executor(self._executor, self._forward, texts)
            per_request = _split(flat, batch)
        except Exception:
            # One bad text must not fail its neighbours: retry each request on its own.
            log.warning("batch of %d requests failed on %s; retrying them one by one", len(batch), self.name)
            per_request, batch = await self._one_by_one(batch)
        keep = [i for i, p in enumerate(batch) if not p.future.done()]  # callers gone during the forward
        if keep:
            task = loop.create_task(self._finish([batch[i] for i in keep], [per_request[i] for i in keep]))
            self._commits.add(task)
            task.add_done_callback(self._commits.discard)

    async def _one_by_one(self, batch: list[Pending]) -> tuple[list[list[R]], list[Pending]]:
        loop = asyncio.get_running_loop()
        ok_results, ok = [], []
        for p in batch:
            if p.future.done():
                continue
            try:
                self.forwards += 1
                flat = await loop.run_in_executor(self._executor, self._forward, p.texts)
                ok_results.append(_split(flat, [p])[0])
                ok.append(p)
            except Exception as exc:
                _set(p.future, exc=exc)
        return ok_results, ok

    async def _finish(self, batch: list[Pending], results: list[list[R]]) -> None:
        try:
            answers = await self._commit(batch, results)
        except Exception as exc:  # nothing committed: every request in the batch fails
            log.warning("commit of %d requests failed on %s: %r", len(batch), self.name, exc)
            for p in batch:
                _set(p.future, exc=exc)
            return
        for p, answer in zip(batch, answers):  # an exception in a request's place fails that request alone
            if isinstance(answer, Exception):
                _set(p.future, exc=answer)
            else:
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
