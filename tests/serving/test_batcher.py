"""MicroBatcher on its own: real asyncio, a real inference thread, a forward that records
what it was given.  No timing thresholds: where time matters, the bounds are lower bounds
(it waited) or far-off deadlines (it did not hang)."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from app.serving.batcher import BatcherClosed, MicroBatcher, OwnerQueueFull, Pending, QueueFull

HANG = 30.0  # seconds before a test calls it a hang; never reached when things work


class Recorder:
    """forward(texts) -> "<text>!"; remembers every batch, can be held, fails on "bad"."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.started: list[float] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def forward(self, texts: list[str]) -> list[str]:
        self.started.append(time.monotonic())
        self.batches.append(list(texts))
        self.entered.set()
        assert self.gate.wait(HANG), "forward held too long"
        if any(t == "bad" for t in texts):
            raise ValueError("cannot score 'bad'")
        return [f"{t}!" for t in texts]


class Committer:
    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    async def __call__(self, batch: list[Pending], results: list[list[str]]) -> list[list[str]]:
        await asyncio.sleep(0)  # a real commit awaits its database thread
        self.seen.append([t for p in batch for t in p.texts])
        return results


def make(rec: Recorder, **kw) -> tuple[MicroBatcher, Committer]:
    commit = Committer()
    kw.setdefault("max_wait_ms", 20.0)
    return MicroBatcher("t", rec.forward, commit, **kw), commit


async def _wait_for(cond, what: str) -> None:
    deadline = time.monotonic() + HANG
    while not cond():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.005)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, HANG))


def test_answers_reach_their_own_request_in_order_under_concurrent_submits() -> None:
    async def main() -> None:
        rec = Recorder()
        b, commit = make(rec, max_batch_size=8)
        rng = random.Random(1)
        requests = [[f"r{i}-t{j}" for j in range(rng.randint(1, 3))] for i in range(60)]

        async def one(texts: list[str]) -> tuple[list[str], list[str]]:
            await asyncio.sleep(rng.random() / 100)
            return texts, await b.submit(texts)

        answers = await asyncio.gather(*(one(t) for t in requests))
        await b.close()
        for texts, got in answers:
            assert got == [f"{t}!" for t in texts]
        assert all(len(batch) <= 8 for batch in rec.batches)
        assert len(rec.batches) < len(requests)  # concurrent callers really shared forwards
        assert sorted(t for s in commit.seen for t in s) == sorted(t for r in requests for t in r)

    run(main())


def test_a_batch_closes_at_max_batch_size_without_waiting_for_the_deadline() -> None:
    async def main() -> None:
        rec = Recorder()
        b, _ = make(rec, max_batch_size=4, max_wait_ms=60_000)  # the deadline is never the reason
        rec.gate.clear()
        first = asyncio.ensure_future(b.submit(["hold"]))  # occupies the inference thread
        await _wait_for(rec.entered.is_set, "first forward")
        rest = [asyncio.ensure_future(b.submit([f"t{i}"])) for i in range(6)]
        await asyncio.sleep(0)
        rec.gate.set()
        await asyncio.wait_for(first, HANG)
        # six queued texts, batches of at most four: a full batch leaves at once
        done, pending = await asyncio.wait(rest, timeout=HANG / 2, return_when=asyncio.FIRST_COMPLETED)
        assert done, "a full batch waited for its deadline"
        assert rec.batches[1] == ["t0", "t1", "t2", "t3"]
        for f in pending:
            f.cancel()
        await b.close()

    run(main())


def test_a_batch_closes_at_max_wait_when_it_does_not_fill() -> None:
    async def main() -> None:
        rec = Recorder()
        b, _ = make(rec, max_batch_size=100, max_wait_ms=150)
        sent = time.monotonic()
        got = await asyncio.gather(*(b.submit([f"t{i}"]) for i in range(3)))
        assert got == [["t0!"], ["t1!"], ["t2!"]]
        assert rec.batches == [["t0", "t1", "t2"]]
        assert rec.started[0] - sent >= 0.14  # it waited for company up to the deadline, then went
        await b.close()

    run(main())


def test_a_request_is_never_split_and_does_not_overflow_a_batch() -> None:
    async def main() -> None:
        rec = Recorder()
        b, _ = make(rec, max_batch_size=4)
        rec.gate.clear()
        first = asyncio.ensure_future(b.submit(["hold"]))
        await _wait_for(rec.entered.is_set, "first forward")
        queued = [asyncio.ensure_future(b.submit(t)) for t in (["a1", "a2", "a3"], ["b1", "b2"], ["c1"])]
        await asyncio.sleep(0)
        rec.gate.set()
        await asyncio.gather(first, *queued)
        assert rec.batches[1:] == [["a1", "a2", "a3"], ["b1", "b2", "c1"]]
        big = await b.submit([f"x{i}" for i in range(6)])  # alone bigger than a batch: one forward
        assert big == [f"x{i}!" for i in range(6)] and rec.batches[-1] == [f"x{i}" for i in range(6)]
        await b.close()

    run(main())


def test_an_error_fails_only_the_request_that_caused_it() -> None:
    async def main() -> None:
        rec = Recorder()
        b, commit = make(rec, max_batch_size=16, max_wait_ms=50)
        results = await asyncio.gather(b.submit(["good one"]), b.submit(["bad"]), b.submit(["good", "two"]),
                                       return_exceptions=True)
        assert results[0] == ["good one!"]
        assert isinstance(results[1], ValueError)
        assert results[2] == ["good!", "two!"]
        assert ["bad"] not in commit.seen and not any("bad" in s for s in commit.seen)
        assert await b.submit(["after"]) == ["after!"]  # the loop survived
        await b.close()

    run(main())


def test_a_failed_commit_fails_its_batch_and_the_loop_goes_on() -> None:
    async def main() -> None:
        rec = Recorder()
        calls = {"n": 0}

        async def commit(batch, results):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("database down")
            return results

        b = MicroBatcher("t", rec.forward, commit, max_wait_ms=1)
        with pytest.raises(RuntimeError, match="database down"):
            await b.submit(["x"])
        assert await b.submit(["y"]) == ["y!"]
        await b.close()

    run(main())


def test_a_full_queue_is_refused_at_once() -> None:
    async def main() -> None:
        rec = Recorder()
        b, _ = make(rec, max_queue=3)
        rec.gate.clear()
        first = asyncio.ensure_future(b.submit(["hold"]))
        await _wait_for(rec.entered.is_set, "first forward")
        queued = asyncio.ensure_future(b.submit(["a", "b", "c"]))
        await asyncio.sleep(0)
        assert b.depth == 3
        with pytest.raises(QueueFull):
            await b.submit(["one too many"])
        rec.gate.set()
        assert await queued == ["a!", "b!", "c!"] and await first == ["hold!"]
        await b.close()

    run(main())


def test_clients_take_turns_so_a_flood_does_not_delay_the_others() -> None:
    """Client A queues ten requests, then B queues two: B's are served second and fourth, not
    after all of A's."""
    async def main() -> None:
        rec = Recorder()
        b, _ = make(rec, max_batch_size=1, max_wait_ms=0)
        rec.gate.clear()
        first = asyncio.ensure_future(b.submit(["hold"], owner="a"))
        await _wait_for(rec.entered.is_set, "first forward")
        flood = [asyncio.ensure_future(b.submit([f"a{i}"], owner="a")) for i in range(10)]
        await asyncio.sleep(0)
        others = [asyncio.ensure_future(b.submit([f"b{i}"], owner="b")) for i in range(2)]
        await asyncio.sleep(0)
        rec.gate.set()
        await asyncio.gather(first, *flood, *others)
        order = [batch[0] for batch in rec.batches]
        assert order[:5] == ["hold", "a0", "b0", "a1", "b1"], order
        assert order[5:] == [f"a{i}" for i in range(2, 10)]
        await b.close()

    run(main())


def test_a_client_over_its_share_of_the_queue_is_refused_while_others_still_queue() -> None:
    async def main() -> None:
        rec = Recorder()
        b, _ = make(rec, max_queue=10, max_queue_per_owner=3)
        rec.gate.clear()
        first = asyncio.ensure_future(b.submit(["hold"], owner="b"))
        await _wait_for(rec.entered.is_set, "first forward")
        mine = asyncio.ensure_future(b.submit(["a", "b", "c"], owner="a"))
        await asyncio.sleep(0)
        with pytest.raises(OwnerQueueFull):
            await b.submit(["one too many"], owner="a")
        theirs = asyncio.ensure_future(b.submit(["x", "y", "z"], owner="b"))
        await asyncio.sleep(0)
        assert b.depth == 6
        rec.gate.set()
        assert await mine == ["a!", "b!", "c!"] and await theirs == ["x!", "y!", "z!"] and await first == ["hold!"]
        assert await b.submit(["again"], owner="a") == ["again!"]  # its share frees as its texts are served
        await b.close()

    run(main())


def test_a_cancelled_caller_is_skipped() -> None:
    async def main() -> None:
        rec = Recorder()
        b, commit = make(rec, max_batch_size=8)
        rec.gate.clear()
        first = asyncio.ensure_future(b.submit(["hold"]))
        await _wait_for(rec.entered.is_set, "first forward")
        gone = asyncio.ensure_future(b.submit(["gone"]))
        kept = asyncio.ensure_future(b.submit(["kept"]))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        rec.gate.set()
        assert await kept == ["kept!"]
        await first
        assert all("gone" not in batch for batch in rec.batches)
        assert all("gone" not in s for s in commit.seen)
        assert b.depth == 0
        await b.close()

    run(main())


def test_close_answers_everything_queued_and_refuses_new_requests() -> None:
    async def main() -> None:
        rec = Recorder()
        b, _ = make(rec, max_batch_size=2)
        rec.gate.clear()
        first = asyncio.ensure_future(b.submit(["hold"]))
        await _wait_for(rec.entered.is_set, "first forward")
        queued = [asyncio.ensure_future(b.submit([f"q{i}"])) for i in range(5)]
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(b.close())
        await asyncio.sleep(0.01)
        with pytest.raises(BatcherClosed):
            await b.submit(["late"])
        rec.gate.set()
        await asyncio.wait_for(closing, HANG)
        assert await first == ["hold!"]
        assert [await q for q in queued] == [[f"q{i}!"] for i in range(5)]

    run(main())


def test_batching_off_is_one_request_per_forward() -> None:
    async def main() -> None:
        rec = Recorder()
        b, _ = make(rec, enabled=False, max_batch_size=32, max_wait_ms=1000)
        requests = [[f"r{i}a", f"r{i}b"] if i % 2 else [f"r{i}"] for i in range(8)]
        got = await asyncio.gather(*(b.submit(t) for t in requests))
        assert got == [[f"{t}!" for t in r] for r in requests]
        assert sorted(rec.batches) == sorted(requests)  # every forward is exactly one request
        await b.close()

    run(main())


def test_a_lone_caller_is_not_made_to_wait_for_company() -> None:
    """One caller at a time (c=1): after a few requests the batcher stops waiting max_wait."""

    async def main() -> None:
        rec = Recorder()
        b, _ = make(rec, max_wait_ms=60_000)
        for i in range(5):
            assert await asyncio.wait_for(b.submit([f"t{i}"]), HANG) == [f"t{i}!"]
        await b.close()

    asyncio.run(main())


def test_the_observer_sees_each_batch() -> None:
    async def main() -> None:
        rec = Recorder()
        seen: list[tuple[int, int]] = []
        b = MicroBatcher("t", rec.forward, Committer(), max_batch_size=4, max_wait_ms=50,
                         observer=lambda n, depth: seen.append((n, depth)))
        await asyncio.gather(*(b.submit([f"t{i}"]) for i in range(4)))
        await b.close()
        assert seen == [(4, 0)]

    run(main())
