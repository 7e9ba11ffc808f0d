"""Blocking database work off the event loop, on one small shared thread pool.

Hot paths (predict, feedback) run their short transactions here, so a burst of requests does
not turn into dozens of threads fighting over the GIL and over more connections than the
pool keeps open."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

DB_THREADS = 4  # enough to overlap round trips; fewer than the connection pool keeps open
_db_pool: ThreadPoolExecutor | None = None
_db_pool_lock = threading.Lock()


async def in_db_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking database work off the event loop, on the small shared DB pool."""
    global _db_pool
    if _db_pool is None:
        with _db_pool_lock:
            if _db_pool is None:
                _db_pool = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="db")
    call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
    return await asyncio.get_running_loop().run_in_executor(_db_pool, call)
