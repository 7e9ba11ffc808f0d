"""A light closed-loop HTTP load generator, run as its own process.

`python -m app.tools.bench.loadgen SPEC.json` reads a spec, keeps `concurrency` keep-alive
connections busy until `count` requests are answered (or, with `count` 0, until its stdin
closes), and prints one JSON document: every request's start time (CLOCK_MONOTONIC, the
same clock in every process), latency, status and the `model_version` of its answer, plus
the CPU seconds this process used.

It speaks just enough HTTP/1.1 by hand (Content-Length bodies, keep-alive) to stay far
lighter than the server it measures: a general client such as httpx costs several times
more CPU per request, and on a 2-core machine that CPU comes out of the server's share.
Imports nothing heavy (no torch), so it starts in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

VERSION_RE = re.compile(rb'"model_version":\s*(-?\d+)')


@dataclass
class Spec:
    host: str
    port: int
    items: list[list[str]]  # [path, json body]; request i sends items[i % len(items)]
    concurrency: int
    count: int = 0  # 0: run until stdin closes
    warmup: int = 0  # requests sent first and not recorded
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 60.0


class Conn:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        extra = "".join(f"{k}: {v}\r\n" for k, v in spec.headers.items())
        self.head_tail = (f"Host: {spec.host}:{spec.port}\r\nContent-Type: application/json\r\n{extra}").encode()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.spec.host, self.spec.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
                          % (path.encode(), self.head_tail, len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        i = lower.find(b"content-length:")
        if i >= 0:
            n = int(lower[i + 15: lower.find(b"\r\n", i)])
            payload = await self.reader.readexactly(n)
        elif b"transfer-encoding: chunked" in lower:
            payload = await self._chunked()
        else:
            payload = b""
        if b"connection: close" in lower:
            self.close()
        return status, payload

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        out = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return bytes(out)
            out += await self.reader.readexactly(size)
            await self.reader.readexactly(2)


async def run(spec: Spec) -> dict[str, Any]:
    items = [(p, b.encode()) for p, b in spec.items]
    records: list[tuple[float, float, int, int | None]] = []
    stop = asyncio.Event()
    state = {"next": 0}
    total = spec.warmup + spec.count if spec.count else None

    if not spec.count:  # run until the parent closes our stdin
        loop = asyncio.get_running_loop()

        def wait_stdin() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_stdin, daemon=True).start()

    async def worker() -> None:
        conn = Conn(spec)
        try:
            while not stop.is_set():
                i = state["next"]
                if total is not None and i >= total:
                    return
                state["next"] = i + 1
                path, body = items[i % len(items)]
                t0 = time.monotonic()
                try:
                    status, payload = await asyncio.wait_for(conn.post(path, body), spec.timeout_s)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
                    conn.close()
                    status, payload = 0, b""
                dt = time.monotonic() - t0
                if i >= spec.warmup:
                    m = VERSION_RE.search(payload) if status == 200 else None
                    records.append((t0, dt, status, int(m.group(1)) if m else None))
        finally:
            conn.close()

    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    return {"records": records, "cpu_s": time.process_time() - cpu0, "wall_s": time.monotonic() - wall0}


def main() -> None:
    spec = Spec(**json.loads(open(sys.argv[1]).read()))
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(spec))
    else:
        result = uvloop.run(run(spec))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
