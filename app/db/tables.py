"""Tables.  Every signal is stored with the prediction it is about, so training and audits
can always see what the model said, which version said it, and to whom."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from app.core.policy import DEFAULT_FEEDBACK_LOSS
from app.core.statuses import RunStatus, Trigger, VersionStatus

# BIGINT on PostgreSQL, INTEGER (the rowid alias, so autoincrement works) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive text and would drop the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}

    if TYPE_CHECKING:  # each model here maps one Table (SQLAlchemy types __table__ as any FromClause)
        __table__: ClassVar[Table]


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # the name of its kind (`app.kinds`); every creator gives it
    labels: Mapped[list[Any]] = mapped_column(JSON)
    descriptions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Learning settings: λ in L = λ·L_data + (1-λ)·L_feedback, loss variant, fine-tuning mode.
    lambda_data: Mapped[float] = mapped_column(Float, default=0.5)
    feedback_loss: Mapped[str] = mapped_column(String(16), default=DEFAULT_FEEDBACK_LOSS)
    finetune: Mapped[str] = mapped_column(String(16), default="full")
    quantize: Mapped[bool] = mapped_column(Boolean, default=False)
    # Retrain policy, gate and per-client cap: free-form so new knobs need no migration.
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    # What the key may do ("predict", "feedback", "read"; see app.services.clients.SCOPES) and,
    # through client_tasks, on which tasks: a key sees no other task.
    scopes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # An admin vouches for this key's feedback (an internal QA team): the noise model takes its votes
    # as known truth for the other keys (app/learning/noise.py).
    trusted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ClientTask(Base):
    """A task a client key may use; deleting either side drops the grant."""

    __tablename__ = "client_tasks"

    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)


class TrainingRun(Base):
    __tablename__ = "training_runs"
    __table_args__ = (
        Index("ix_training_runs_task_status", "task_id", "status"),
        # One open (queued or running) run per task, enforced by the database.
        Index(
            "uq_training_runs_one_open",
            "task_id",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED)  # a RunStatus
    trigger: Mapped[str] = mapped_column(String(16), default=Trigger.ADMIN)  # a Trigger
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    worker_id: Mapped[str | None] = mapped_column(String(128), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    requeued_from: Mapped[int | None] = mapped_column(
        ForeignKey("training_runs.id", name="fk_training_runs_requeued_from"), default=None
    )
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    loss_curve: Mapped[list[Any]] = mapped_column(JSON, default=list)
    data_counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Highest feedback/example ids the run saw: "new signals since the last run" counts past these.
    watermark: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    device: Mapped[str | None] = mapped_column(String(32), default=None)
    duration_s: Mapped[float | None] = mapped_column(Float, default=None)
    gate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    candidate_version_id: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("task_id", "version", name="uq_model_versions_task_version"),
        # At most one active version per task, enforced by the database.
        Index(
            "uq_model_versions_one_active",
            "task_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    status: Mapped[str] = mapped_column(String(16), default=VersionStatus.CANDIDATE)  # a VersionStatus
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    training_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_runs.id", name="fk_training_runs_requeued_from"), default=None
    )
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data_counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Inference engines prepared for this version (app/serving/engines.py): files, sha256, parity
    # against PyTorch fp32, measured speed, and the one serving should use.  {} = none yet.
    engines: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(default=None)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_task_created", "task_id", "created_at"),
                      # a version's predictions oldest or newest first: drift and −1 shares on every
                      # console page and scrape (app/observability/monitoring.py)
                      Index("ix_predictions_version_created", "model_version_id", "created_at", "id"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"), default=None, index=True)
    user_hash: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    text: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(Text)  # the answer as the task's kind stores it
    scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_task_id", "task_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"), default=None)
    user_hash: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    signal: Mapped[int] = mapped_column(SmallInteger)  # +1 right, -1 wrong
    correction: Mapped[str | None] = mapped_column(Text, default=None)  # the right answer, as the kind stores it
    span: Mapped[int | None] = mapped_column(Integer, default=None)  # the signal is about this part of the answer
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Example(Base):
    __tablename__ = "examples"
    __table_args__ = (UniqueConstraint("task_id", "text_hash", name="uq_examples_task_text"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(Text)  # the answer as the task's kind stores it
    split: Mapped[str] = mapped_column(String(16))  # train | validation
    text_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerBeat(Base):
    """Each worker process's last sign of life (written every poll), so the API can tell
    whether anything is there to train, however the workers are deployed."""

    __tablename__ = "worker_beats"

    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Erasure(Base):
    """One erasure of one end user (DELETE /v1/users/{id}): written in the transaction that
    deletes their rows, and checked by every commit of their predictions and feedback, so a
    request accepted before `erased_at` (queued here, or on another API process) stores nothing.
    Kept only as long as such a request could still be in flight (app/runs/retention.py)."""

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_hash: Mapped[str] = mapped_column(String(64), index=True)  # the namespaced hash (app/core/security.py)
    client_id: Mapped[int | None] = mapped_column(Integer, default=None)  # whose user; None = the admin token's
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)
