"""Asking for the feedback that teaches most: which predictions carry `feedback_wanted: true`
(within the task's `policy.feedback_budget`), and the review queue of predictions where a
person's label is worth most.

A prediction's *value* is the task kind's `uncertainty` of its answer (in [0, 1]) times a
rarity boost for its label (in [1, 2)): 1 + max(0, 1 − (n + 1)/(mean + 1)), n the label's
labelled rows (examples plus corrections) and mean their mean over the task's labels.  A label
with no labelled rows while the others have many nearly doubles the value; a task with nothing
labelled boosts nothing, and the +1s keep a handful of rows from swinging it.  Nothing new is stored:
the queue recomputes the value from the stored `scores` of each prediction.

The budget is kept per task and per API process (`AskBudget`): ask when the value reaches the
(1 − budget) quantile of the last `ASK_WINDOW` values (before `ASK_WARMUP` values, only when it
reaches `COLD_THRESHOLD`), and never let the share asked among the last `ASK_WINDOW` predictions
exceed the budget.  Every process keeps that share, so the whole deployment does too.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.tables import Example, Feedback, Prediction, Task
from app.core.errors import Invalid
from app.kinds import Answer, TaskKind, get_kind
from app.core.policy import Policy
from app.services.clients import Caller, allow
from app.services.tasks import load_task

log = logging.getLogger("flywheel.review")

ASK_WINDOW = 1000  # recent values for the quantile, and recent predictions for the hard cap
ASK_WARMUP = 50  # fewer values than this: no quantile yet, ask only above COLD_THRESHOLD
COLD_THRESHOLD = 0.8
RARITY_WEIGHT = 1.0  # a label with no labelled rows (others have many) has its value × nearly (1 + this)
RARE_REASON_BOOST = 1.5  # "rare label" when the boost is at least this ((n + 1) ≤ half of (mean + 1))
STATS_TTL_S = 30.0  # how long a process trusts a task's budget and label counts

REVIEW_SCAN = 5000  # most recent uncorrected predictions a review considers
REVIEW_MAX_LIMIT = 500

REFUTED = "refuted without a correction"
UNCERTAIN = "uncertain"
RARE = "rare label"


# ---------------------------------------------------------------- value of a label from the user


def rarity_boosts(labels: Sequence[str], counts: Mapping[str, int]) -> dict[str, float]:
    """Per label, 1 + RARITY_WEIGHT · max(0, 1 − (n + 1)/(mean + 1)), n its labelled rows
    (examples and corrections), mean over the task's labels; all 1.0 while nothing is labelled."""
    if not labels:
        return {}
    mean = sum(counts.get(lab, 0) for lab in labels) / len(labels)
    return {lab: 1.0 + RARITY_WEIGHT * max(0.0, 1.0 - (counts.get(lab, 0) + 1) / (mean + 1)) for lab in labels}


def value_of(kind: TaskKind, answer: Answer, boosts: Mapping[str, float]) -> tuple[float, float]:
    """(value, boost) of one answer: the kind's uncertainty times its label's rarity boost."""
    boost = boosts.get(answer.label, 1.0)
    u = min(1.0, max(0.0, float(kind.uncertainty(answer))))
    return u * boost, boost


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


def labelled_counts(session: Session, task_id: int) -> dict[str, int]:
    """Labelled rows per label: examples (both splits) plus corrections given as feedback."""
    counts: dict[str, int] = {}
    for label, n in session.execute(
        select(Example.label, func.count()).where(Example.task_id == task_id).group_by(Example.label)
    ):
        counts[label] = counts.get(label, 0) + int(n)
    for label, n in session.execute(
        select(Feedback.correction, func.count())
        .where(Feedback.task_id == task_id, Feedback.correction.is_not(None))
        .group_by(Feedback.correction)
    ):
        counts[label] = counts.get(label, 0) + int(n)
    return counts


def read_ask_stats(session: Session, task_id: int) -> AskStats | None:
    """The task's feedback budget and label boosts now; None if the task is gone."""
    row = session.execute(select(Task.policy, Task.labels).where(Task.id == task_id)).one_or_none()
    if row is None:
        return None
    policy, labels = row
    budget = Policy.from_stored(policy).feedback_budget
    return AskStats(budget=budget, boosts=rarity_boosts([str(x) for x in labels], labelled_counts(session, task_id)))


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
        stats (none: nothing is asked) and is retried after the TTL."""
        now = time.monotonic()
        for task_id in task_ids:
            t = self._tasks.setdefault(task_id, _TaskAsk())
            t.fetched_at = now
            try:
                with sessions() as s:
                    stats = read_ask_stats(s, task_id)
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


# ---------------------------------------------------------------- the review queue


def review_queue(sessions: sessionmaker[Session], *, task: str, caller: Caller, limit: int) -> dict[str, Any]:
    """The caller's predictions of `task` where a correction is worth most, best first:
    those whose latest signal is −1 and that have no correction (most recent first), then the
    rest by value.  Corrected predictions, and those whose latest signal is +1 (their label is
    known), are left out.  Only the `REVIEW_SCAN` most recent uncorrected predictions are
    considered.  A client sees its own predictions; the admin sees all."""
    if not 1 <= limit <= REVIEW_MAX_LIMIT:
        raise Invalid("limit", f"limit must be between 1 and {REVIEW_MAX_LIMIT}; got {limit}.")
    allow(caller, "read", task)
    with sessions() as s:
        t = load_task(s, task)
        kind = get_kind(t.kind)
        boosts = rarity_boosts([str(x) for x in t.labels], labelled_counts(s, t.id))
        corrected = exists().where(Feedback.prediction_id == Prediction.id, Feedback.correction.is_not(None))
        latest_signal = (
            select(Feedback.signal).where(Feedback.prediction_id == Prediction.id)
            .order_by(Feedback.id.desc()).limit(1).scalar_subquery()
        )
        q = (
            select(Prediction.id, Prediction.text, Prediction.label, Prediction.scores, Prediction.created_at,
                   latest_signal.label("signal"))
            .where(Prediction.task_id == t.id, ~corrected)
            .order_by(Prediction.created_at.desc(), Prediction.id.desc())
            .limit(REVIEW_SCAN)
        )
        if not caller.is_admin:
            q = q.where(Prediction.client_id == caller.client_id)
        rows = s.execute(q).all()

    refuted: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for r in rows:
        signal = None if r.signal is None else int(r.signal)
        if signal == 1:
            continue
        scores = dict(r.scores or {})
        value, boost = value_of(kind, Answer(r.label, scores, {"label": r.label, "scores": scores}), boosts)
        item = {"prediction_id": r.id, "text": r.text, "label": r.label, "scores": scores, "signal": signal,
                "value": round(value, 6), "created_at": r.created_at}
        if signal == -1:
            item["reason"] = REFUTED
            refuted.append(item)
        else:
            item["reason"] = RARE if boost >= RARE_REASON_BOOST else UNCERTAIN
            rest.append(item)
    rest.sort(key=lambda it: -it["value"])  # stable: ties stay most recent first
    return {"task": t.name, "items": (refuted + rest)[:limit]}


__all__ = ["AskBudget", "AskStats", "Asking", "labelled_counts", "rarity_boosts", "read_ask_stats",
           "review_queue", "value_of"]
