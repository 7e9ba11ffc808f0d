"""POST /v1/tasks/{task}/predict"""

from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import CallerDep, StateDep, load_task
from app.api.problems import Problem
from app.schemas import PredictRequest, PredictResponse
from app.security import hash_user_id
from app.serving.batcher import BatcherClosed, MicroBatcher, QueueFull
from app.services.predictions import PredictContext, check_texts, make_commit
from app.state import AppState

router = APIRouter(tags=["predict"])


def batcher_for(state: AppState, task: str) -> MicroBatcher:
    b = state.batchers.get(task)
    if b is None:
        s = state.settings
        m = state.metrics

        def observe(n: int, depth: int) -> None:
            m.batch_size.labels(task).observe(n)
            m.queue_depth.labels(task).set(depth)

        b = MicroBatcher(
            task,
            lambda texts: state.registry.forward(task, texts),
            make_commit(state.sessions),
            max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            max_queue=s.max_queue,
            enabled=s.batching,
            observer=observe,
        )
        state.batchers[task] = b
    return b


@router.post("/v1/tasks/{task}/predict", response_model=PredictResponse)
async def predict(task: str, body: PredictRequest, caller: CallerDep, state: StateDep) -> Response:
    """Predict one text or a list; every prediction is stored before this answers.

    The answer is built by the commit step from values we made ourselves, so it is written
    as JSON directly instead of being validated again against `PredictResponse`."""
    s = state.settings
    single = body.text is not None
    texts = [body.text] if single else list(body.texts or [])
    check_texts(texts, single=single, max_chars=s.max_text_chars, max_texts=s.max_texts_per_request)
    loaded = await state.registry.ensure(task)
    if loaded is None:
        def _exists() -> None:
            with state.sessions() as session:
                load_task(session, task)

        await run_in_threadpool(_exists)
        raise Problem(503, "model-not-loaded", "Model not loaded", f"Task {task!r} has no loaded model yet.",
                      headers={"Retry-After": "1"})
    user_hash = hash_user_id(body.user_id, s.resolved_user_hash_key) if body.user_id else None
    ctx = PredictContext(task_id=loaded.task_id, client_id=caller.client_id, user_hash=user_hash)
    try:
        version, predictions = await batcher_for(state, task).submit(texts, ctx)
    except (QueueFull, BatcherClosed):
        state.metrics.rejected.labels(task).inc()
        raise Problem(503, "overloaded", "Overloaded", f"The queue for task {task!r} is full; retry shortly.",
                      headers={"Retry-After": "1"}) from None
    state.metrics.predictions.labels(task).inc(len(texts))
    return Response(json.dumps({"model_version": version, "predictions": predictions}, ensure_ascii=False,
                               allow_nan=False, separators=(",", ":")), media_type="application/json")
