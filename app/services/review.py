"""The review queue: the predictions where a person's label is worth most (by the value of
`app/learning/value.py`, recomputed from each prediction's stored `scores`; nothing new is
stored), and the labelled rows per label that the value's rarity boost reads."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from app.core.errors import Invalid
from app.db.tables import Example, Feedback, Prediction
from app.kinds import Answer, get_kind
from app.learning.value import rarity_boosts, value_of
from app.process.state import AppState
from app.services.clients import Caller, allow
from app.services.tasks import load_task

RARE_REASON_BOOST = 1.5  # "rare label" when the boost is at least this ((n + 1) ≤ half of (mean + 1))
REVIEW_SCAN = 5000  # most recent uncorrected predictions a review considers
REVIEW_MAX_LIMIT = 500

REFUTED = "refuted without a correction"
UNCERTAIN = "uncertain"
RARE = "rare label"


def labelled_counts(session: Session, *, task_id: int) -> dict[str, int]:
    """Labelled rows per label: examples (both splits) plus corrections given as feedback."""
    counts: dict[str, int] = {}
    for label, n in session.execute(
        select(Example.label, func.count()).where(Example.task_id == task_id).group_by(Example.label)
    ):
        counts[label] = counts.get(label, 0) + int(n)
    for correction, n in session.execute(
        select(Feedback.correction, func.count())
        .where(Feedback.task_id == task_id, Feedback.correction.is_not(None))
        .group_by(Feedback.correction)
    ):
        if correction is not None:  # always (the query asks for corrections); said for the type checker
            counts[correction] = counts.get(correction, 0) + int(n)
    return counts


def review_queue(state: AppState, *, task: str, caller: Caller, limit: int) -> dict[str, Any]:
    """The caller's predictions of `task` where a correction is worth most, best first:
    those whose latest signal is −1 and that have no correction (most recent first), then the
    rest by value.  Corrected predictions, and those whose latest signal is +1 (their label is
    known), are left out.  Only the `REVIEW_SCAN` most recent uncorrected predictions are
    considered.  A client sees its own predictions; the admin sees all."""
    if not 1 <= limit <= REVIEW_MAX_LIMIT:
        raise Invalid("limit", f"limit must be between 1 and {REVIEW_MAX_LIMIT}; got {limit}.")
    allow(caller, scope="read", task=task)
    with state.sessions() as s:
        t = load_task(s, name=task)
        kind = get_kind(t.kind)
        boosts = rarity_boosts([str(x) for x in t.labels], labelled_counts(s, task_id=t.id))
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


__all__ = ["RARE", "REFUTED", "REVIEW_MAX_LIMIT", "UNCERTAIN", "labelled_counts", "review_queue"]
