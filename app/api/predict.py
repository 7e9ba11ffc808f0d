"""POST /v1/tasks/{task}/predict"""

from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import Response

from app.api.deps import CallerDep, StateDep, TaskName
from app.api.schemas import PredictRequest, PredictResponse
from app.services.predictions import predict as predict_texts

router = APIRouter(tags=["predict"])


@router.post("/v1/tasks/{task}/predict", response_model=PredictResponse)
async def predict(task: TaskName, body: PredictRequest, caller: CallerDep, state: StateDep) -> Response:
    """Predict one text or a list; every prediction is stored before this answers.

    The answer is built by the commit step from values we made ourselves, so it is written
    as JSON directly instead of being validated again against `PredictResponse`."""
    single = body.text is not None
    texts = [body.text] if body.text is not None else list(body.texts or [])
    answer = await predict_texts(state, task=task, texts=texts, single=single, caller=caller, user_id=body.user_id)
    return Response(json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":")),
                    media_type="application/json")
