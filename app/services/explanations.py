"""Explaining an answer: which parts of the text pushed the model towards it (app/serving/explain.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from app.errors import Invalid, Unavailable
from app.serving.explain import explain
from app.services.clients import Caller, allow
from app.services.predictions import check_texts, served_model
from app.state import AppState


async def explain_text(state: AppState, *, task: str, text: str, caller: Caller) -> dict[str, Any]:
    """The served version's answer to `text` and each token's attribution towards it; classification
    tasks (a rating's score and a tagging's spans are not one label to attribute)."""
    allow(caller, "predict", task)
    check_texts([text], single=True, max_chars=state.settings.max_text_chars, max_texts=1)
    await served_model(state, task)
    reference = await asyncio.to_thread(state.served.reference_model, task)
    if reference is None:
        raise Unavailable(f"Task {task!r} has no loaded model yet.", slug="model-not-loaded", title="Model not loaded")
    if reference.kind.name != "classification":
        raise Invalid("task", f"Explanations are for classification tasks; {task!r} is a {reference.kind.name} "
                              "task.", slug="not-explainable")
    answer = await asyncio.to_thread(explain, reference, text)
    return {"task": task, "model_version": reference.version, **answer}
