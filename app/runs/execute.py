"""Executing a claimed run, in named steps:

  start   — the run is still ours; read the task and its active version (the parent)
  gather  — the task's examples and feedback as a dataset (resolved, capped, split)
  fit     — load the parent, score it on the validation rows, train the candidate
  store   — save the candidate (atomic, content-hashed) and register it as a `candidate`
  judge   — score the candidate on the same rows and ask the gate
  second look — when the gate cannot decide, judge the last undecided candidate of the same
            parent again, on every row neither it nor the active has trained on since (its
            held-out rows and all that came after it): evidence kept across runs
  finish  — in one transaction, promote the candidate (the old active retires), or the one the
            second look found not worse, or reject it with the reason

Any error fails the run with its text and leaves the active version alone; a shutdown puts
the run back in the queue; a run taken away (lost heartbeat) is abandoned.  Every write
checks the run is still this worker's.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.db.session import transaction
from app.db.tables import ModelVersion, Task, TrainingRun, utcnow
from app.db.training_rows import TrainingRows, load_training_rows, trusted_client_ids
from app.db.versions import activate, active_version, lock_task, next_version_number, register_version
from app.kinds import TaskKind, TaskSpec, get_kind, load_version
from app.model.store import CorruptVersion, verify_version
from app.model.vocab import grow_vocabulary, unknown_chars
from app.learning.dataset import TaskDataset, build_dataset
from app.learning.noise import NoiseReport, estimate_noise
from app.learning.gate import MAX_LOOKS, Evaluation, Verdict, evaluate, judge as gate_judge, look_confidence
from app.learning.trainer import TrainConfig, TrainingInterrupted, TrainResult, save, train
from app.model.encoder import resolve_device
from app.core.policy import Policy
from app.observability import worker_metrics
from app.runs.prepare import engines_for, probe_texts
from app.runs.heartbeat import RunControl
from app.runs.lifecycle import RunAbandoned, drop_candidate, fail_owned, owned, release_interrupted, update_owned
from app.core.statuses import GateDecision, RunStatus, VersionStatus

log = logging.getLogger(__name__)


# New embedding rows start at [UNK]'s plus noise of one standard deviation: on THUCNews the
# characters then learn (scripts/chinese_vocab.py, reports/chinese/); started identical they barely did.
GROWN_ROW_SPREAD = 1.0


class RunError(Exception):
    """A run cannot proceed, for a reason worth showing the admin as is."""


def scoped_noise(session: Session, task: Task, rows: TrainingRows) -> tuple[list[Any], NoiseReport]:
    """The task's feedback with each signal about one part of an answer (one span of a set) labelled
    with that part, and the noise model on it (the kind's `same`, the trusted keys)."""
    spec = TaskSpec.of(task)
    kind = get_kind(task.kind)
    feedback = [replace(fb, shown=kind.scope_label(fb.shown, fb.span)) if fb.span is not None else fb
                for fb in rows.feedback]
    noise = estimate_noise(feedback=feedback, examples=rows.examples, trusted=trusted_client_ids(session),
                           same=lambda a, b: kind.same(spec.labels, a, b))
    return feedback, noise


def gather_dataset(session: Session, task: Task, policy: Policy | None = None, holdout_salt: str = "",
                   max_rows: int | None = None) -> TaskDataset:
    """The task's training rows from the database (at most `max_rows`, the newest), built into a
    dataset for its kind; its counts say how many rows of each kind the cap left out."""
    spec = TaskSpec.of(task)
    kind = get_kind(task.kind)
    rows = load_training_rows(session, task.id, max_rows=max_rows)
    # A signal about one part of an answer trains on that part; how noisy each key is
    # (app/learning/noise.py): its signals carry its flip rate into the losses and the gate, and
    # a key that says the opposite on purpose is left out.
    feedback, noise = scoped_noise(session, task, rows)
    same = lambda a, b: kind.same(spec.labels, a, b)  # noqa: E731
    dataset = build_dataset(labels=spec.labels, examples=rows.examples, feedback=feedback,
                            watermark=rows.watermark, policy=policy or Policy.from_stored(task.policy),
                            target=lambda label: kind.target(spec, label), holdout_salt=holdout_salt,
                            same=same, flip_rates=noise.flip_rates(),
                            excluded_clients=noise.adversarial())
    dataset.counts["examples_left_out"] = rows.left_out["examples"]
    dataset.counts["feedback_left_out"] = rows.left_out["feedback"]
    dataset.counts["noise"] = noise.to_json()  # what noise the version was trained under
    return dataset


def train_config_for(task: Task, policy: Policy, settings: Settings, max_len: int) -> TrainConfig:
    return TrainConfig(policy=policy, lambda_data=task.lambda_data, variant=task.feedback_loss,
                       finetune=task.finetune, seed=settings.seed, max_len=max_len, device=settings.device)


@dataclass
class RunContext:
    """What the steps pass along."""

    run_id: int
    worker_id: str
    task_id: int = 0
    task_name: str = "?"
    task: Task | None = None
    kind: TaskKind | None = None
    policy: Policy = field(default_factory=Policy)
    parent_id: int = 0
    parent_path: Path = Path()
    parent_sha256: str = ""
    candidate_id: int | None = None
    candidate_path: Path | None = None
    started: float = field(default_factory=time.monotonic)


# ---------------------------------------------------------------- the steps


def start(factory: sessionmaker[Session], ctx: RunContext) -> None:
    with transaction(factory) as s:
        run = owned(s, ctx.run_id, ctx.worker_id)
        task = s.get_one(Task, run.task_id)
        ctx.task_id, ctx.task_name = task.id, task.name
        parent = active_version(s, task.id)
        if parent is None:
            raise RunError(f"task {task.name!r} has no active version to start from")
        s.expunge(task)
        ctx.task, ctx.parent_id, ctx.parent_path = task, parent.id, Path(parent.path)
        ctx.parent_sha256 = parent.sha256
    ctx.kind = get_kind(task.kind)
    ctx.policy = Policy.from_stored(task.policy)
    worker_metrics.RUNS.labels(ctx.task_name, "started").inc()


def gather(factory: sessionmaker[Session], ctx: RunContext, max_rows: int | None = None) -> TaskDataset:
    assert ctx.task is not None
    with factory() as s:
        dataset = gather_dataset(s, ctx.task, ctx.policy, holdout_salt=f"run-{ctx.run_id}", max_rows=max_rows)
    examples, feedback = dataset.counts["examples_left_out"], dataset.counts["feedback_left_out"]
    if examples or feedback:
        log.warning("run %s (%s): read the newest %d rows (FLYWHEEL_MAX_TRAINING_ROWS); left out the oldest "
                    "%d examples and %d feedback rows (data_counts examples_left_out, feedback_left_out)",
                    ctx.run_id, ctx.task_name, max_rows, examples, feedback)
    if not dataset.train:
        raise RunError(f"nothing to train on: {dataset.counts}")
    return dataset


@dataclass
class Fitted:
    model: Any
    tokenizer: Any
    parent_meta: Any
    config: TrainConfig
    device: torch.device
    active: Evaluation
    result: TrainResult
    vocab_added: int = 0  # tokens this run added to the parent's tokenizer (app/model/vocab.py)


def fit(factory: sessionmaker[Session], settings: Settings, ctx: RunContext, dataset: TaskDataset,
        control: RunControl) -> Fitted:
    task, kind = ctx.task, ctx.kind
    assert task is not None and kind is not None
    device = resolve_device(settings.device)
    try:  # a candidate trained from corrupt weights would be judged against them too: stop here
        verify_version(ctx.parent_path, ctx.parent_sha256, f"the active version of task {ctx.task_name!r}")
    except CorruptVersion as exc:
        raise RunError(f"{exc}; not training from it (activate a good version)") from None
    model, tokenizer, parent_meta = load_version(ctx.parent_path, device=device,
                                                 trainable_lora=task.finetune == "lora")
    config = train_config_for(task, ctx.policy, settings, parent_meta.max_seq_len)
    active = evaluate(kind, model, tokenizer, dataset.validation, dataset.labels, device=device,
                      max_len=config.max_len)
    grown = 0
    if ctx.policy.grow_vocab and task.finetune == "full":  # (LoRA shares its base's embeddings: not grown)
        grown = grow_vocabulary(model, tokenizer, unknown_chars(tokenizer, [item.text for item in dataset.train]),
                                spread=GROWN_ROW_SPREAD, seed=ctx.run_id)
        if grown:
            log.info("run %s: %d characters the tokenizer did not know became tokens", ctx.run_id, grown)

    def on_progress(epoch: int, step: int, total: int, loss: float) -> None:
        progress = {"epoch": epoch, "epochs": config.epochs, "step": step, "total_steps": total,
                    "fraction": round(step / total, 4), "loss": loss if math.isfinite(loss) else None}
        if not update_owned(factory, ctx.run_id, ctx.worker_id, progress=progress):
            control.lost.set()

    curve: list[dict[str, Any]] = []
    last_curve_write = [0.0]

    def on_epoch(entry: dict[str, Any]) -> None:
        """The loss curve so far, written at most once a second (short epochs are many)."""
        curve.append(entry)
        if time.monotonic() - last_curve_write[0] >= config.progress_every_s:
            last_curve_write[0] = time.monotonic()
            if not update_owned(factory, ctx.run_id, ctx.worker_id, loss_curve=list(curve)):
                control.lost.set()

    result = train(kind, model, tokenizer, dataset.train, dataset.validation, config,
                   on_progress=on_progress, on_epoch=on_epoch, should_stop=control.should_stop)
    return Fitted(model, tokenizer, parent_meta, config, device, active, result, grown)


def store(factory: sessionmaker[Session], settings: Settings, ctx: RunContext, fitted: Fitted,
          counts: dict[str, Any]) -> None:
    with factory() as s:
        number = next_version_number(s, ctx.task_id)
    ctx.candidate_path, sha = save(fitted.model, fitted.tokenizer, parent_meta=fitted.parent_meta,
                                   parent_path=ctx.parent_path, root=settings.models_dir / ctx.task_name,
                                   name=f"v{number}",
                                   extra={"training_run_id": ctx.run_id, "parent_version_id": ctx.parent_id})
    with transaction(factory) as s:
        owned(s, ctx.run_id, ctx.worker_id)
        version = register_version(s, task=s.get_one(Task, ctx.task_id), path=ctx.candidate_path, sha256=sha,
                                   version=next_version_number(s, ctx.task_id), status=VersionStatus.CANDIDATE,
                                   parent_id=ctx.parent_id, training_run_id=ctx.run_id, data_counts=counts)
        ctx.candidate_id = version.id
        s.execute(update(TrainingRun).where(TrainingRun.id == ctx.run_id).values(candidate_version_id=version.id))


def judge(ctx: RunContext, fitted: Fitted, dataset: TaskDataset) -> Verdict:
    assert ctx.kind is not None
    candidate = evaluate(ctx.kind, fitted.model, fitted.tokenizer, dataset.validation, dataset.labels,
                         device=fitted.device, max_len=fitted.config.max_len)
    p = ctx.policy
    return gate_judge(ctx.kind, dataset.validation, candidate, fitted.active, tolerance=p.gate_tolerance,
                      max_recall_drop=p.max_recall_drop, confidence=p.gate_confidence, min_rows=p.gate_min_rows,
                      seed=ctx.run_id)


@dataclass
class SecondLook:
    """An earlier undecided candidate judged again in this run."""

    version_id: int
    version: int
    path: Path
    look: int
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "look": self.look, "decision": self.verdict.decision,
                "reason": self.verdict.reason, "confidence": self.verdict.comparison.confidence
                if self.verdict.comparison else None,
                "comparison": self.verdict.comparison.to_json() if self.verdict.comparison else None}


def second_look(factory: sessionmaker[Session], settings: Settings, ctx: RunContext) -> SecondLook | None:
    """The last candidate of the same parent the gate could not decide on, judged again on the
    rows neither it nor the active has trained on: the ones held out in its run and every
    signal that arrived after it.  At the confidence `look_confidence` asks for its next look;
    None when there is none to look at (or it has had MAX_LOOKS)."""
    assert ctx.task is not None and ctx.kind is not None
    with factory() as s:
        prev = s.scalar(select(ModelVersion).where(
            ModelVersion.task_id == ctx.task_id, ModelVersion.parent_id == ctx.parent_id,
            # retired too: an undecided candidate an admin activated for a while and rolled back
            ModelVersion.status.in_([VersionStatus.REJECTED, VersionStatus.RETIRED]),
            ModelVersion.training_run_id.is_not(None),
            ModelVersion.id != ctx.candidate_id).order_by(ModelVersion.id.desc()).limit(1))
        if prev is None or not (prev.reason or "").startswith("inconclusive"):
            return None
        look = int((prev.metrics or {}).get("looks", 1)) + 1
        run = s.get(TrainingRun, prev.training_run_id)
        if look > MAX_LOOKS or run is None or not run.watermark:
            return None
        since = int(run.watermark.get("feedback_id", 0))
        dataset = gather_dataset(s, ctx.task, ctx.policy, holdout_salt=f"run-{run.id}",
                                 max_rows=settings.max_training_rows)
        found = (prev.id, prev.version, Path(prev.path), prev.sha256)
    version_id, number, path, sha = found
    rows = dataset.validation + [it for it in dataset.train if it.order > since]
    if not rows:
        return None
    device = resolve_device(settings.device)
    try:
        verify_version(path, sha, f"candidate v{number} of task {ctx.task_name!r}")
        verify_version(ctx.parent_path, ctx.parent_sha256, f"the active version of task {ctx.task_name!r}")
    except (CorruptVersion, FileNotFoundError) as exc:
        log.warning("run %s: no second look at v%s: %s", ctx.run_id, number, exc)
        return None
    evaluations = []
    for where in (path, ctx.parent_path):
        model, tokenizer, meta = load_version(where, device=device)
        evaluations.append(evaluate(ctx.kind, model, tokenizer, rows, dataset.labels, device=device,
                                    max_len=meta.max_seq_len))
        del model
    p = ctx.policy
    verdict = gate_judge(ctx.kind, rows, evaluations[0], evaluations[1], tolerance=p.gate_tolerance,
                         max_recall_drop=p.max_recall_drop, confidence=look_confidence(p.gate_confidence, look),
                         min_rows=p.gate_min_rows, seed=ctx.run_id)
    log.info("run %s (%s): second look %d at v%s on %d rows: %s", ctx.run_id, ctx.task_name, look, number,
             len(rows), verdict.decision)
    return SecondLook(version_id, number, path, look, verdict)


def prepare(factory: sessionmaker[Session], settings: Settings, ctx: RunContext, dataset: TaskDataset,
            path: Path | None = None) -> dict[str, Any]:
    """The inference engines of the version to be activated (by default the candidate), made
    before it is activated so API processes swap straight to the fastest one (app/runs/prepare.py)."""
    path = path or ctx.candidate_path
    assert path is not None
    update_owned(factory, ctx.run_id, ctx.worker_id, progress={"fraction": 1.0, "stage": "preparing engines"})
    with factory() as s:
        texts = probe_texts(s, ctx.task_id, [item.text for item in dataset.validation])
    return engines_for(settings, path, texts)


def finish(factory: sessionmaker[Session], ctx: RunContext, fitted: Fitted, dataset: TaskDataset,
           verdict: Verdict, counts: dict[str, Any], engines: dict[str, Any],
           second: SecondLook | None = None) -> RunStatus:
    result = fitted.result
    with transaction(factory) as s:
        run = owned(s, ctx.run_id, ctx.worker_id)  # the run's row first, then the task's, as the reaper does
        lock_task(s, ctx.task_id)  # a rollback or activation waits, or has committed: `current` is the truth
        assert ctx.candidate_id is not None
        version = s.get_one(ModelVersion, ctx.candidate_id)
        current = active_version(s, ctx.task_id)
        moved = current is None or current.id != ctx.parent_id
        if verdict.promote and moved:
            verdict = Verdict(GateDecision.INCONCLUSIVE, "the active version changed while this run trained; the candidate "
                              "was compared with its parent, not with the current active", verdict.candidate,
                              verdict.active, verdict.tolerance, verdict.max_recall_drop, verdict.comparison)
        gate = {**verdict.to_json(), "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                "stopped_early": result.stopped_early}
        if second is not None:
            gate["second_look"] = second.to_json()
            _record_second_look(s, second, promote=not verdict.promote and not moved,
                                engines={} if verdict.promote else engines)
        version.metrics = gate
        if engines and verdict.promote:
            version.engines = engines
        if verdict.promote:
            activate(s, version=version)
        else:
            version.status = VersionStatus.REJECTED
            version.reason = verdict.reason if verdict.decision == GateDecision.REJECT else f"inconclusive: {verdict.reason}"
        run.status = RunStatus.PROMOTED if verdict.promote else RunStatus.REJECTED
        run.gate = gate
        run.loss_curve = result.loss_curve
        run.data_counts = counts
        run.watermark = dataset.watermark
        run.device = result.device
        run.duration_s = time.monotonic() - ctx.started
        run.finished_at = utcnow()
        run.progress = {"epoch": result.epochs_run, "epochs": fitted.config.epochs, "step": result.steps,
                        "total_steps": result.steps, "fraction": 1.0, "best_epoch": result.best_epoch}
        status, duration = RunStatus(run.status), run.duration_s
    log.info("run %s (%s): %s — %s", ctx.run_id, ctx.task_name, status, verdict.reason)
    worker_metrics.RUNS.labels(ctx.task_name, status).inc()
    worker_metrics.RUN_SECONDS.labels(ctx.task_name).observe(duration)
    worker_metrics.GATE_SCORE.labels(ctx.task_name, "candidate").set(verdict.candidate.get("score") or 0.0)
    worker_metrics.GATE_SCORE.labels(ctx.task_name, "active").set(verdict.active.get("score") or 0.0)
    worker_metrics.GATE_PROMOTED.labels(ctx.task_name).set(1.0 if verdict.promote else 0.0)
    worker_metrics.GATE_DECISIONS.labels(ctx.task_name, verdict.decision).inc()
    return status


def _record_second_look(s: Session, second: SecondLook, *, promote: bool, engines: dict[str, Any]) -> None:
    """What a second look decided, on the version it looked at: promoted (when `promote`: this
    run's own candidate was not, and the active is still their parent), rejected for good, or
    one more look counted."""
    earlier = s.get(ModelVersion, second.version_id)
    if earlier is None or earlier.status not in (VersionStatus.REJECTED, VersionStatus.RETIRED):
        return
    earlier.metrics = {**(earlier.metrics or {}), "looks": second.look,
                       f"look_{second.look}": second.to_json()}
    if second.verdict.promote and promote:
        if engines:
            earlier.engines = engines
        activate(s, version=earlier)
        earlier.reason = None
        log.info("v%s promoted on look %d: %s", second.version, second.look, second.verdict.reason)
    elif second.verdict.decision == GateDecision.REJECT:
        earlier.reason = f"rejected on look {second.look}: {second.verdict.reason}"


# ---------------------------------------------------------------- the whole run


def execute_run(
    settings: Settings,
    factory: sessionmaker[Session],
    run_id: int,
    *,
    worker_id: str,
    control: RunControl | None = None,
) -> str:
    """Execute a run this worker has claimed.  Returns its final status: promoted, rejected or
    failed; `queued` if a shutdown interrupted it (requeued); `abandoned` if it was taken away."""
    control = control or RunControl()
    ctx = RunContext(run_id=run_id, worker_id=worker_id)
    try:
        start(factory, ctx)
        dataset = gather(factory, ctx, settings.max_training_rows)
        fitted = fit(factory, settings, ctx, dataset, control)
        counts = {**dataset.counts, **fitted.result.counts, "reliability": dataset.reliability,
                  "vocab_added": fitted.vocab_added}
        store(factory, settings, ctx, fitted, counts)
        verdict = judge(ctx, fitted, dataset)
        second = None if verdict.promote else second_look(factory, settings, ctx)
        engines: dict[str, Any] = {}
        if settings.engine != "torch" and (verdict.promote or (second is not None and second.verdict.promote)):
            engines = prepare(factory, settings, ctx, dataset, None if verdict.promote else second.path)  # type: ignore[union-attr]
        return finish(factory, ctx, fitted, dataset, verdict, counts, engines, second)
    except (RunAbandoned, TrainingInterrupted) as exc:
        if control.lost.is_set() or isinstance(exc, RunAbandoned):
            log.warning("run %s abandoned: %s", run_id, exc)
            drop_candidate(factory, ctx.candidate_id, ctx.candidate_path, "its run was taken away from this worker")
            worker_metrics.RUNS.labels(ctx.task_name, "abandoned").inc()
            return "abandoned"
        log.info("run %s interrupted by shutdown; requeued", run_id)
        drop_candidate(factory, ctx.candidate_id, ctx.candidate_path, "its run was interrupted")
        if not release_interrupted(factory, run_id, worker_id):
            return "abandoned"
        worker_metrics.RUNS.labels(ctx.task_name, "requeued").inc()
        return RunStatus.QUEUED
    except Exception as exc:
        log.exception("run %s failed", run_id)
        error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RunError) else str(exc)
        drop_candidate(factory, ctx.candidate_id, ctx.candidate_path, f"run failed: {error}")
        duration = time.monotonic() - ctx.started
        if not fail_owned(factory, run_id, worker_id, error=error, duration_s=duration):
            return "abandoned"
        worker_metrics.RUNS.labels(ctx.task_name, "failed").inc()
        worker_metrics.RUN_SECONDS.labels(ctx.task_name).observe(duration)
        return RunStatus.FAILED
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
