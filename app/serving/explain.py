"""Why a model gave its answer: integrated gradients (Captum's LayerIntegratedGradients) on
the word embeddings, from a baseline where every word is [PAD] (the special tokens stay), to
the text, for the predicted label.  Each token's attribution is the sum over the embedding of
gradient × (input − baseline) along the path; positive pushed the answer towards the label,
negative against.  Cost: `steps` forwards and backwards of the PyTorch fp32 model (serving may
run a faster engine, which has no gradients)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from captum.attr import LayerIntegratedGradients

from app.model.encoder import encode_texts
from app.serving.scoring import LoadedModel, score_texts
from app.serving.priority import lower_priority

log = logging.getLogger("flywheel.explain")

STEPS = 32
METHOD = (f"integrated gradients (Captum LayerIntegratedGradients) on the word embeddings, {STEPS} steps "
          "from an all-[PAD] baseline, for the predicted label")


def explain(loaded: LoadedModel, text: str, *, steps: int = STEPS, target: int | None = None) -> dict[str, Any]:
    """{label, score, attributions: [{start, end, text, weight}], method, ms} for label index
    `target` (default: this model's own answer); weights scaled so the largest magnitude is 1,
    one entry per token that covers characters of the text.

    Captum hooks `loaded`'s word embeddings while it runs: `loaded` must be a model no other
    thread is using (an `Explainer` keeps such copies)."""
    started = time.perf_counter()
    model, tok = loaded.model, loaded.tokenizer
    [enc] = encode_texts(tok, [text], loaded.max_len, offsets=True)
    ids = torch.tensor([enc.ids], device=loaded.device)
    mask = torch.ones_like(ids)
    special = set(tok.all_special_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    baseline = torch.tensor([[i if i in special else pad for i in enc.ids]], device=loaded.device)
    with torch.no_grad():
        probs = torch.softmax(model(ids, mask).float(), dim=-1)[0]
    target = int(probs.argmax()) if target is None else target
    lig = LayerIntegratedGradients(lambda i, m: model(i, m).float(), model.encoder.get_input_embeddings())
    attributions = lig.attribute(ids, baselines=baseline, additional_forward_args=(mask,), target=target,
                                 n_steps=steps, internal_batch_size=steps)
    per_token = attributions.sum(dim=-1)[0].detach().cpu()
    covered = [(k, s, e) for k, (s, e) in enumerate(enc.offsets) if e > s]
    scale = max((abs(float(per_token[k])) for k, _, _ in covered), default=0.0) or 1.0
    return {
        "label": loaded.labels[target],
        "score": round(float(probs[target]), 6),
        "attributions": [{"start": s, "end": e, "text": text[s:e], "weight": round(float(per_token[k]) / scale, 4)}
                         for k, s, e in covered],
        "method": METHOD if steps == STEPS else METHOD.replace(f"{STEPS} steps", f"{steps} steps"),
        "ms": round(1000 * (time.perf_counter() - started), 1),
    }


class ExplainerBusy(Exception):
    """More explanations are waiting than the pool takes; the caller should retry later."""


class Explainer:
    """Explanations kept off the serving path.

    Integrated gradients hooks the model it runs on, so an explanation never touches a model that
    serves: each task gets its own PyTorch fp32 copy of the version it serves, used by one
    explanation at a time (a lock per task, which serving never takes), loaded once per version
    however many ask at once, and at most `max_models` copies are kept (least recently used go
    first).  Explanations run on their own `workers` threads, with at most `max_waiting` queued
    behind them: one caller cannot take every core, and the excess is told to come back.

    The label explained is the one the served engine gives for the text (an int8 or ONNX engine
    may, rarely, differ from fp32), so an explanation never names another answer than /predict."""

    def __init__(self, *, current: Callable[[str], LoadedModel | None],
                 load_copy: Callable[[LoadedModel], LoadedModel | None],
                 workers: int, max_waiting: int, max_models: int) -> None:
        self._current, self._load_copy = current, load_copy
        self.workers, self.max_waiting, self.max_models = workers, max_waiting, max_models
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="explainer", initializer=lower_priority)
        self._copies: OrderedDict[str, LoadedModel] = OrderedDict()  # task -> its fp32 copy, LRU first
        self._task_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()  # guards the two dicts and the count
        self._in_flight = 0

    def copies(self) -> dict[str, int]:
        """Which version each kept copy is of, by task (for metrics and tests)."""
        with self._lock:
            return {task: m.version_id for task, m in self._copies.items()}

    async def explain(self, task: str, text: str) -> tuple[LoadedModel, dict[str, Any]]:
        """The served model for `task` and its answer's explanation; ExplainerBusy when the pool
        and its queue are full, LookupError when the task serves nothing here."""
        with self._lock:
            if self._in_flight >= self.workers + self.max_waiting:
                raise ExplainerBusy(f"{self._in_flight} explanations are running or waiting")
            self._in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._explain, task, text)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _explain(self, task: str, text: str) -> tuple[LoadedModel, dict[str, Any]]:
        with self._lock:
            task_lock = self._task_locks.setdefault(task, threading.Lock())
        with task_lock:
            served = self._current(task)
            if served is None:
                raise LookupError(task)
            [scored] = score_texts(served, [text], chunk=1)  # what the served engine answers
            copy = self._copy_of(task, served)
            if copy is None:
                raise LookupError(task)
            answer = explain(copy, text, target=copy.labels.index(scored.answer.label))
            answer["label"] = scored.answer.label
            answer["score"] = round(float(scored.answer.scores[scored.answer.label]), 6)
            return served, answer

    def _copy_of(self, task: str, served: LoadedModel) -> LoadedModel | None:
        """The task's fp32 copy of the version `served` is; loaded (under the task's lock) when
        there is none or it is of another version."""
        with self._lock:
            copy = self._copies.get(task)
            if copy is not None and copy.version_id == served.version_id:
                self._copies.move_to_end(task)
                return copy
            self._copies.pop(task, None)  # an older version's copy: never used again
        copy = self._load_copy(served)
        if copy is None:
            return None
        with self._lock:
            self._copies[task] = copy
            while len(self._copies) > self.max_models:
                evicted, old = self._copies.popitem(last=False)
                log.info("dropped the explanation copy of %s v%d (more than %d kept)", evicted, old.version,
                         self.max_models)
        return copy

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
