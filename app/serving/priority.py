"""Background work in an API process (loading a version, explaining) runs at a lower scheduling
priority than serving, so it takes CPU from the inference thread only when that thread does not
want it."""

from __future__ import annotations

import os
import threading

BACKGROUND_NICENESS = 10


def lower_priority() -> None:
    """Lower this thread's scheduling priority (Linux: niceness is per thread; threads it
    starts, such as its OpenMP team, inherit it).  Elsewhere a no-op.  A thread pool's
    `initializer`."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
    except (AttributeError, OSError):
        pass
