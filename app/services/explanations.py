"""Explaining an answer: which parts of the text pushed the model towards it (app/serving/explain.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from app.db.tables import ModelVersion, Prediction, Task
from app.errors import Invalid, Unavailable
from app.serving.explain import explain
from app.services.clients import Caller, allow
from app.services.feedback import unknown_prediction
from app.services.predictions import check_texts, served_model
from app.state import AppState


async def _explain(state: AppState, task: str, text: str) -> dict[str, Any]:
    await served_model(state, task)
    reference = await asyncio.to_thread(state.served.reference_model, task)
    if reference is None:
        raise Unavailable(f"Task {task!r} has no loaded model yet.", slug="model-not-loaded", title="Model not loaded")
    if reference.kind.name != "classification":
        raise Invalid("task", f"Explanations are for classification tasks; {task!r} is a {reference.kind.name} "
                              "task.", slug="not-explainable")
    answer = await asyncio.to_thread(explain, reference, text)
    return {"task": task, "model_version": reference.version, **answer}


async def explain_text(state: AppState, *, task: str, text: str, caller: Caller) -> dict[str, Any]:
    """The served version's answer to `text` and each token's attribution towards it; classification
    tasks (a rating's score and a tagging's spans are not one label to attribute)."""
    allow(caller, "predict", task)
    check_texts([text], single=True, max_chars=state.settings.max_text_chars, max_texts=1)
    return await _explain(state, task, text)


async def explain_prediction(state: AppState, *, prediction_id: str, caller: Caller) -> dict[str, Any]:
    """A stored prediction's text explained by the version served now (`model_version`), beside
    the version that answered it then (`prediction_version`); a client sees only its own."""
    with state.sessions() as s:
        row = s.execute(select(Prediction.text, Prediction.client_id, Task.name, ModelVersion.version)
                        .join(Task, Task.id == Prediction.task_id)
                        .join(ModelVersion, ModelVersion.id == Prediction.model_version_id)
                        .where(Prediction.id == prediction_id)).one_or_none()
    if row is None or not caller.sees(row.name) or (not caller.is_admin and row.client_id != caller.client_id):
        raise unknown_prediction(prediction_id)
    allow(caller, "read", row.name)
    out = await _explain(state, row.name, row.text)
    return {"prediction_id": prediction_id, "prediction_version": row.version, "text": row.text, **out}
