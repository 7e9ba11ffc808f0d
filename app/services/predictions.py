"""Predicting: check the texts, queue them on the task's micro-batcher, and commit every
answer (one insert per batch) before any caller hears it.  Each answer says whether a label
from the user is wanted (`feedback_wanted`, within the task's feedback budget:
`app/services/asking.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from app.db.erasures import erased, lock_users, refused
from app.db.tables import Prediction, new_id, utcnow
from app.db.threads import in_db_thread
from app.core.errors import Invalid, Overloaded, RateLimited, Unavailable
from app.core.security import hash_user_id, user_namespace
from app.serving.batcher import BatcherClosed, MicroBatcher, OwnerQueueFull, Pending, QueueFull
from app.serving.scoring import LoadedModel, Scored
from app.services.clients import Caller, allow
from app.services.asking import Asking
from app.services.tasks import load_task
from app.services.users import user_erased
from app.process.state import AppState


@dataclass(frozen=True)
class PredictContext:
    task_id: int
    client_id: int | None
    user_hash: str | None
    accepted_at: datetime = field(default_factory=utcnow)  # a user erased after this: nothing is stored


def check_texts(texts: list[str], *, single: bool, max_chars: int, max_texts: int) -> None:
    """Every bad text is an Invalid that names it; nothing is predicted or stored."""
    if not single:
        if not texts:
            raise Invalid("texts", "texts must hold at least one text.")
        if len(texts) > max_texts:
            raise Invalid("texts", f"{len(texts)} texts in one call; the limit is {max_texts}.",
                          slug="too-many-texts")
    for i, t in enumerate(texts):
        where = "text" if single else f"texts[{i}]"
        if not t.strip():
            raise Invalid(where, f"{where} is empty.", slug="empty-text")
        if len(t) > max_chars:
            raise Invalid(where, f"{where} has {len(t)} characters; the limit is {max_chars}.",
                          slug="text-too-long")


def _insert(sessions: sessionmaker[Session], rows: list[dict], asking: Asking | None = None,
            stale: list[int] | None = None, accepted: dict[str, datetime] | None = None) -> dict[str, datetime]:
    """One INSERT for the whole batch, in its own transaction.  Core, not the ORM: nothing here
    needs objects back, and it halves the cost of the statement for a single-row batch.
    A row whose user was erased after its request was `accepted` (row id -> when) is left out,
    checked under the users' lock (app/db/erasures.py); returns {row id: erased_at} of those.
    Then, on the same trip to the DB thread, refresh the feedback budgets that are `stale`."""
    left_out: dict[str, datetime] = {}
    with sessions.kw["bind"].begin() as conn:
        users = {r["user_hash"] for r in rows if r["user_hash"] is not None}
        if users:
            lock_users(conn, users)
            if found := erased(conn, users):
                now = utcnow()
                left_out = {r["id"]: found[r["user_hash"]] for r in rows if r["user_hash"] in found
                            and refused((accepted or {}).get(r["id"], now), found[r["user_hash"]])}
                rows = [r for r in rows if r["id"] not in left_out]
        if rows:
            conn.execute(insert(Prediction.__table__), rows)
    if asking is not None and stale:
        asking.refresh(sessions, stale)
    return left_out


def make_commit(sessions: sessionmaker[Session], *, asking: Asking | None = None):
    """The batcher's commit step: store every prediction of the batch, then answer each request,
    each answer with its `feedback_wanted` (decided by `asking`, the task's budget in this
    process; its stats are read once per TTL on the insert's trip to the database).

    An exception to the services' rule (app/services/__init__.py): the step is the
    `MicroBatcher`'s callback, one transaction for many requests at once, run by machinery that
    holds no AppState, so it is built over the sessionmaker alone."""
    asking = asking if asking is not None else Asking()

    async def commit(batch: list[Pending], results: list[list[Scored]]) -> list[tuple[int, list[dict]] | Exception]:
        now = utcnow()
        rows: list[dict] = []
        accepted: dict[str, datetime] = {}
        answers: list[tuple[int, list[dict]]] = []
        decide: list[tuple[int, Scored, dict]] = []
        for pending, scored in zip(batch, results):
            ctx: PredictContext = pending.context
            out = []
            for text, sc in zip(pending.texts, scored):
                pid = new_id()
                rows.append({"id": pid, "task_id": ctx.task_id, "model_version_id": sc.model.version_id,
                             "client_id": ctx.client_id, "user_hash": ctx.user_hash, "text": text,
                             "label": sc.answer.label, "scores": sc.answer.scores, "created_at": now})
                accepted[pid] = ctx.accepted_at
                answer = {"id": pid, **sc.answer.body}
                out.append(answer)
                decide.append((ctx.task_id, sc, answer))
            answers.append((scored[0].model.version, out))
        stale = sorted({task_id for task_id, _, _ in decide if asking.stale(task_id)})
        left_out = await in_db_thread(_insert, sessions, rows, asking, stale, accepted)
        for task_id, sc, answer in decide:  # in arrival order, on the event loop: no other commit interleaves
            if answer["id"] not in left_out:
                answer["feedback_wanted"] = asking.decide(task_id, sc.model.kind, sc.answer)
        # A request whose user was erased while it was in flight fails alone (all its rows share the user).
        return [user_erased(left_out[out[0]["id"]]) if out[0]["id"] in left_out else (version, out)
                for version, out in answers]

    return commit


def batcher_for(state: AppState, *, task: str) -> MicroBatcher:
    """The task's micro-batcher, made on first use."""
    b = state.batchers.get(task)
    if b is None:
        s = state.settings
        m = state.metrics

        def observe(n: int, depth: int) -> None:
            m.batch_size.labels(task).observe(n)
            m.queue_depth.labels(task).set(depth)

        b = MicroBatcher(
            task,
            lambda texts: state.served.forward(task, texts),
            make_commit(state.sessions, asking=Asking()),
            max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            max_queue=s.max_queue,
            max_queue_per_owner=s.max_queue_per_client,
            enabled=s.batching,
            observer=observe,
        )
        state.batchers[task] = b
    return b


def _task_exists(sessions: sessionmaker[Session], name: str) -> None:
    with sessions() as s:
        load_task(s, name=name)


async def served_model(state: AppState, *, task: str) -> LoadedModel:
    """The task's model in this process, loaded now if need be; NotFound for a task that does
    not exist, Unavailable for one whose model is not loaded yet."""
    loaded = await state.served.ensure(task)
    if loaded is None:
        await in_db_thread(_task_exists, state.sessions, task)
        raise Unavailable(f"Task {task!r} has no loaded model yet.", slug="model-not-loaded",
                          title="Model not loaded")
    return loaded


async def predict(state: AppState, *, task: str, texts: list[str], single: bool, caller: Caller,
                  user_id: str | None) -> dict[str, Any]:
    """Predict one text or a list; every prediction is stored before this returns.
    {"model_version", "predictions": [{"id", …the kind's answer, "feedback_wanted"}]}."""
    accepted_at = utcnow()
    allow(caller, scope="predict", task=task)
    s = state.settings
    check_texts(texts, single=single, max_chars=s.max_text_chars, max_texts=s.max_texts_per_request)
    loaded = await served_model(state, task=task)
    user_hash = (hash_user_id(user_id, s.resolved_user_hash_key, user_namespace(caller.client_id))
                 if user_id else None)
    ctx = PredictContext(task_id=loaded.task_id, client_id=caller.client_id, user_hash=user_hash,
                         accepted_at=accepted_at)
    try:
        version, predictions = await batcher_for(state, task=task).submit(texts, ctx, owner=caller.client_id)
    except OwnerQueueFull:
        state.metrics.rate_limited.labels("queue").inc()
        raise RateLimited(f"This client already has {s.max_queue_per_client} texts waiting on task {task!r} "
                          "(its fair share of the queue); retry shortly.", retry_after_s=1) from None
    except (QueueFull, BatcherClosed):
        state.metrics.rejected.labels(task).inc()
        raise Overloaded(f"The queue for task {task!r} is full; retry shortly.") from None
    state.metrics.predictions.labels(task).inc(len(texts))
    asked = sum(1 for p in predictions if p.get("feedback_wanted"))
    if asked:
        state.metrics.feedback_wanted.labels(task).inc(asked)
    return {"model_version": version, "predictions": predictions}


__all__ = ["PredictContext", "batcher_for", "check_texts", "make_commit", "predict", "served_model"]
