"""Waiting in tests: on a condition, with a deadline that only stops a broken test from hanging
(never a performance claim)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

GIVE_UP_S = 60.0


def wait_until(condition: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.02) -> object:
    """Poll until `condition()` is truthy and return its value; fail naming `what` if it is not
    by `timeout_s`.  A condition that raises (a client thread or worker that died, a run that
    ended too early) fails the test at once."""
    end = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= end:
            pytest.fail(f"gave up after {timeout_s:.0f}s waiting for {what}")
        time.sleep(poll_s)
