"""Which predictions carry `feedback_wanted: true`: at most the task's `policy.feedback_budget`
of them, the most valuable (`app/learning/value.py`).

The budget is kept per task and per API process (`AskBudget`): ask when the value reaches the
(1 − budget) quantile of the last `ASK_WINDOW` values (before `ASK_WARMUP` values, only when it
reaches `COLD_THRESHOLD`), and never let the share asked among the last `ASK_WINDOW` predictions
exceed the budget.  Every process keeps that share, so the whole deployment does too.  Deciding
runs on the predict hot path, on the event loop, so it does no I/O: `Asking` holds each task's
budget and label boosts and is told to refresh them, after `STATS_TTL_S`, on a trip to the
database the caller makes anyway.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.policy import Policy
from app.db.tables import Task
from app.kinds import Answer, TaskKind
from app.learning.value import rarity_boosts, value_of
from app.services.review import labelled_counts

log = logging.getLogger("flywheel.review")

ASK_WINDOW = 1000  # recent values for the quantile, and recent predictions for the hard cap
ASK_WARMUP = 50  # fewer values than this: no quantile yet, ask only above COLD_THRESHOLD
COLD_THRESHOLD = 0.8
STATS_TTL_S = 30.0  # how long a process trusts a task's budget and label counts


class AskBudget:
    """Decides, one value at a time, whether to ask: at most `budget` of the predictions.

    Two rules.  (1) Ask when the value is at least the empirical (1 − budget) quantile of the
    last `window` values (a sorted copy kept beside the deque, so each step costs O(window)
    memmove, not a sort); before `warmup` values, when it is at least `cold_threshold`.
    (2) Hard cap: after this decision, the asked share of the last `window` decisions must not
    exceed `budget` (so the first ask comes at the ⌈1/budget⌉-th prediction at the earliest).
    Budget 0 never asks; budget 1 always does."""

    def __init__(self, budget: float, *, window: int = ASK_WINDOW, warmup: int = ASK_WARMUP,
                 cold_threshold: float = COLD_THRESHOLD) -> None:
        self.budget = budget
        self.warmup = warmup
        self.cold_threshold = cold_threshold
        self._values: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []
        self._asked: deque[bool] = deque(maxlen=window)
        self._asked_count = 0

    @property
    def asked_share(self) -> float:
        """Share asked among the decisions in the window (0 before any)."""
        return self._asked_count / len(self._asked) if self._asked else 0.0

    def threshold(self) -> float:
        """The value a prediction needs now to be asked about (before the cap)."""
        n = len(self._sorted)
        if n < self.warmup:
            return self.cold_threshold
        return self._sorted[min(n - 1, int((1.0 - self.budget) * n))]

    def _remember(self, value: float) -> None:
        if len(self._values) == self._values.maxlen:
            old = self._values[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._values.append(value)
        bisect.insort(self._sorted, value)

    def _record(self, asked: bool) -> None:
        if len(self._asked) == self._asked.maxlen and self._asked[0]:
            self._asked_count -= 1
        self._asked.append(asked)
        self._asked_count += asked

    def _within_cap(self) -> bool:
        full = len(self._asked) == self._asked.maxlen
        n_after = len(self._asked) + (0 if full else 1)
        asked_after = self._asked_count + 1 - (1 if full and self._asked[0] else 0)
        return asked_after <= self.budget * n_after + 1e-9

    def decide(self, value: float) -> bool:
        if math.isnan(value):
            value = 0.0
        b = self.budget
        if b >= 1.0:
            ask = True
        elif b <= 0.0:
            ask = False
        else:
            ask = value >= self.threshold() and self._within_cap()
        self._remember(value)
        self._record(ask)
        return ask


# ---------------------------------------------------------------- the task's budget and label counts


@dataclass(frozen=True)
class AskStats:
    """What deciding needs from the database: the budget and the rarity boost of each label."""

    budget: float
    boosts: dict[str, float]


def read_ask_stats(session: Session, *, task_id: int) -> AskStats | None:
    """The task's feedback budget and label boosts now; None if the task is gone."""
    row = session.execute(select(Task.policy, Task.labels).where(Task.id == task_id)).one_or_none()
    if row is None:
        return None
    policy, labels = row
    budget = Policy.from_stored(policy).feedback_budget
    boosts = rarity_boosts([str(x) for x in labels], labelled_counts(session, task_id=task_id))
    return AskStats(budget=budget, boosts=boosts)


@dataclass
class _TaskAsk:
    stats: AskStats | None = None
    budget: AskBudget | None = None
    fetched_at: float = -math.inf


@dataclass
class Asking:
    """One API process's budgets, per task id, and the stats they read (refreshed every
    `ttl_s`, by the caller, on a trip to the database it makes anyway)."""

    ttl_s: float = STATS_TTL_S
    _tasks: dict[int, _TaskAsk] = field(default_factory=dict)

    def stale(self, task_id: int, now: float | None = None) -> bool:
        t = self._tasks.get(task_id)
        now = time.monotonic() if now is None else now
        return t is None or now - t.fetched_at >= self.ttl_s

    def refresh(self, sessions: sessionmaker[Session], task_ids: Sequence[int]) -> None:
        """Blocking: read the stats of these tasks (on the DB thread).  A failure keeps the old
        stats (none: nothing is asked) and is retried after the TTL.  It takes the sessionmaker
        because the batcher's commit step (`predictions.make_commit`, which holds no AppState)
        calls it on its own trip to the database."""
        now = time.monotonic()
        for task_id in task_ids:
            t = self._tasks.setdefault(task_id, _TaskAsk())
            t.fetched_at = now
            try:
                with sessions() as s:
                    stats = read_ask_stats(s, task_id=task_id)
            except Exception:
                log.exception("could not read the feedback budget of task id %d; keeping the last one", task_id)
                continue
            if stats is None:
                self._tasks.pop(task_id, None)
                continue
            t.stats = stats
            if t.budget is None:
                t.budget = AskBudget(stats.budget)
            else:
                t.budget.budget = stats.budget

    def decide(self, task_id: int, kind: TaskKind, answer: Answer) -> bool:
        """feedback_wanted for one answer (on the event loop: no I/O)."""
        t = self._tasks.get(task_id)
        if t is None or t.stats is None or t.budget is None:
            return False
        value, _ = value_of(kind, answer, t.stats.boosts)
        return t.budget.decide(value)


__all__ = ["ASK_WARMUP", "ASK_WINDOW", "COLD_THRESHOLD", "STATS_TTL_S", "AskBudget", "AskStats", "Asking",
           "read_ask_stats"]
