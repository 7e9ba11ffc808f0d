"""Explaining an answer: which parts of the text pushed the model towards it (app/serving/explain.py).

Explanations cost ~30 forwards and backwards each, so they run on the explainer's own threads
and model copies (never the serving ones) and spend a budget of their own per client key."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.tables import ModelVersion, Prediction, Task
from app.db.threads import in_db_thread
from app.core.errors import Invalid, Overloaded, RateLimited, Unavailable
from app.kinds import KINDS
from app.serving.explain import ExplainerBusy
from app.services.clients import Caller, allow
from app.services.feedback import unknown_prediction
from app.services.predictions import check_texts, served_model
from app.process.state import AppState

EXPLAINABLE = " or ".join(k.name for k in KINDS.values() if k.explainable)  # the kinds an explanation is for


def _spend_budget(state: AppState, caller: Caller) -> None:
    """A client key's explanation budget (the admin token is not limited)."""
    if caller.is_admin:
        return
    wait = state.explain_rates.take(caller.client_id)
    if wait:
        state.metrics.rate_limited.labels("explain").inc()
        raise RateLimited(f"Client {caller.name!r} is over {state.explain_rates.rate:g} explanations/s; retry in "
                          f"{math.ceil(wait)}s.", retry_after_s=math.ceil(wait), field="Authorization")


async def _explain(state: AppState, task: str, text: str, caller: Caller) -> dict[str, Any]:
    served = await served_model(state, task=task)
    if not served.kind.explainable:
        raise Invalid("task", f"Explanations are for {EXPLAINABLE} tasks; {task!r} is a {served.kind.name} task.",
                      slug="not-explainable")
    _spend_budget(state, caller)
    try:
        model, answer = await state.explainer.explain(task, text)
    except ExplainerBusy:
        state.metrics.rejected.labels(task).inc()
        raise Overloaded(f"Every explanation thread is busy and {state.explainer.max_waiting} explanations are "
                         "waiting; retry shortly.", slug="explainer-busy") from None
    except LookupError:
        raise Unavailable(f"Task {task!r} has no loaded model yet.", slug="model-not-loaded",
                          title="Model not loaded") from None
    return {"task": task, "model_version": model.version, **answer}


async def explain_text(state: AppState, *, task: str, text: str, caller: Caller) -> dict[str, Any]:
    """The served version's answer to `text` and each token's attribution towards it; for a kind
    that is `explainable` (one label per text: a score or a set of spans is not one label to attribute)."""
    allow(caller, scope="predict", task=task)
    check_texts([text], single=True, max_chars=state.settings.max_text_chars, max_texts=1)
    return await _explain(state, task, text, caller)


def _stored(sessions: sessionmaker[Session], prediction_id: str) -> Row[str, int | None, str, int] | None:
    with sessions() as s:
        return s.execute(select(Prediction.text, Prediction.client_id, Task.name, ModelVersion.version)
                         .join(Task, Task.id == Prediction.task_id)
                         .join(ModelVersion, ModelVersion.id == Prediction.model_version_id)
                         .where(Prediction.id == prediction_id)).one_or_none()


async def explain_prediction(state: AppState, *, prediction_id: str, caller: Caller) -> dict[str, Any]:
    """A stored prediction's text explained by the version served now (`model_version`), beside
    the version that answered it then (`prediction_version`); a client sees only its own."""
    row = await in_db_thread(_stored, state.sessions, prediction_id)
    if row is None or not caller.sees(row.name) or (not caller.is_admin and row.client_id != caller.client_id):
        raise unknown_prediction(prediction_id)
    allow(caller, scope="read", task=row.name)
    out = await _explain(state, row.name, row.text, caller)
    return {"prediction_id": prediction_id, "prediction_version": row.version, "text": row.text, **out}
