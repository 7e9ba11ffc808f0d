"""Serve an app over real HTTP: uvicorn on an OS-chosen loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from app.config import Settings
from app.main import create_app

STARTUP_S = 180  # when to give up waiting, not a performance claim


@contextmanager
def serve_in_thread(settings: Settings) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    while True:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server at {base} did not come up")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    if thread.is_alive():
        raise RuntimeError("uvicorn did not shut down")
