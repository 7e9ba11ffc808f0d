"""Fine-tune a version on a task's data, in named steps: setup, fit (with validate), save.

Full fine-tuning by default; LoRA (peft, on attention query/value) when asked.  Seeded and
reproducible on one device; CUDA with autocast when present, CPU otherwise.  The per-step
loop holds no Python-side synchronisation: the running loss stays on the device and is read
only when progress is reported (at most every `progress_every_s`) and at each epoch's end.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from app.kinds.base import KindModel
from app.learning.dataset import Item
from app.learning.losses import combined_loss, feedback_term
from app.model.encoder import EncoderWithHead, encode_texts, resolve_device
from app.model.store import VersionMeta, save_version
from app.core.policy import DEFAULT_FEEDBACK_LOSS, DEFAULT_FINETUNE, DEFAULT_LAMBDA, FEEDBACK_LOSSES, Policy

ProgressFn = Callable[[int, int, int, float], None]  # (epoch, step, total_steps, mean train loss so far)
EpochFn = Callable[[dict[str, Any]], None]  # one loss-curve entry
StopFn = Callable[[], bool]


class TrainingInterrupted(Exception):
    """`should_stop` said so (worker shutting down, or the run was taken away)."""


@dataclass
class TrainConfig:
    """How one run trains.  The task's policy (epochs, learning rate, batch size, patience, LoRA
    rank) comes in whole and is validated there; the task's λ, loss and fine-tuning mode beside
    it; the rest are the trainer's own knobs."""

    policy: Policy = field(default_factory=Policy)
    lambda_data: float = DEFAULT_LAMBDA  # λ in L = λ·L_data + (1−λ)·L_feedback
    variant: str = DEFAULT_FEEDBACK_LOSS  # feedback loss, one of FEEDBACK_LOSSES
    finetune: str = DEFAULT_FINETUNE  # full | lora
    seed: int = 0
    max_len: int = 128
    device: str = "auto"  # auto | cpu | cuda
    head_lr_scale: float = 10.0  # the small head learns this much faster
    weight_decay: float = 0.01
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("query", "value")
    amp: bool = True  # autocast on CUDA (bf16 where supported, else fp16 with loss scaling)
    grad_clip: float | None = 1.0
    progress_every_s: float = 1.0

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, rule: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig.{name} {rule}, got {getattr(self, name)!r}")

        check("lambda_data", 0 <= self.lambda_data <= 1, "must be in [0, 1]")
        check("variant", self.variant in FEEDBACK_LOSSES, f"must be one of {FEEDBACK_LOSSES}")
        check("finetune", self.finetune in ("full", "lora"), "must be 'full' or 'lora'")
        check("max_len", 8 <= self.max_len <= 512, "must be in [8, 512]")
        check("device", self.device in ("auto", "cpu", "cuda"), "must be auto, cpu or cuda")
        check("head_lr_scale", self.head_lr_scale > 0, "must be > 0")
        check("weight_decay", self.weight_decay >= 0, "must be >= 0")
        check("lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)")
        check("lora_targets", len(self.lora_targets) > 0, "must name at least one module")
        check("grad_clip", self.grad_clip is None or self.grad_clip > 0, "must be > 0 or None")
        check("progress_every_s", self.progress_every_s >= 0, "must be >= 0")

    # The policy's training knobs, under the names the loop uses.
    @property
    def epochs(self) -> int:
        return self.policy.epochs

    @property
    def batch_size(self) -> int:
        return self.policy.batch_size

    @property
    def lr(self) -> float:
        return self.policy.learning_rate

    @property
    def patience(self) -> int:
        return self.policy.patience


@dataclass
class TrainResult:
    loss_curve: list[dict[str, Any]]
    best_epoch: int
    epochs_run: int
    steps: int
    stopped_early: bool
    counts: dict[str, int]
    device: str
    duration_s: float


# ---------------------------------------------------------------- batches


@dataclass
class Row:
    ids: list[int]
    label: Any  # the kind's target
    signal: int  # 0 labelled, ±1 feedback on `label`
    weight: float
    flip: float = 0.0  # the chance its client flips a signal (app/learning/noise.py)


@dataclass
class Batch:
    """Rows [0, n_data) are labelled (cross-entropy), rows [n_data, B) are ±1 feedback."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, …) targets, or the answer shown for feedback rows
    signals: torch.Tensor  # (B,)
    weights: torch.Tensor  # (B,)
    n_data: int
    flips: torch.Tensor | None = None  # (B,) each row's client's flip rate; None: all 0

    def to(self, device: torch.device) -> "Batch":
        nb = device.type == "cuda"
        move = lambda t: t.to(device, non_blocking=nb)  # noqa: E731
        return Batch(move(self.input_ids), move(self.attention_mask), move(self.labels), move(self.signals),
                     move(self.weights), self.n_data, None if self.flips is None else move(self.flips))


def encode(tokenizer: Any, items: Sequence[Item], max_len: int, kind: KindModel) -> list[Row]:
    """Tokenise once, unpadded (each batch pads to its own longest row); the kind aligns each
    target with its tokens (character spans -> token tags for a token-level kind)."""
    if not items:
        return []
    encoded = encode_texts(tokenizer, [it.text for it in items], max_len, offsets=kind.token_level)
    return [Row(e.ids, kind.align(it.label, e), it.signal, it.weight, it.flip) for e, it in zip(encoded, items)]


def collate(rows: Sequence[Row], pad_id: int, kind: KindModel) -> Batch:
    rows = sorted(rows, key=lambda r: r.signal != 0)  # labelled first (stable: order kept otherwise)
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids, dtype=torch.long)
        mask[i, : len(r.ids)] = 1
    return Batch(
        input_ids=ids,
        attention_mask=mask,
        labels=kind.target_tensor([r.label for r in rows]),
        signals=torch.tensor([r.signal for r in rows], dtype=torch.long),
        weights=torch.tensor([r.weight for r in rows], dtype=torch.float32),
        n_data=sum(r.signal == 0 for r in rows),
        flips=torch.tensor([r.flip for r in rows], dtype=torch.float32),
    )


def batch_order(rows: Sequence[Row], batch_size: int, rng: random.Random | None = None) -> list[list[int]]:
    """Row indices per batch, grouping rows of similar length to limit padding.

    Training (rng given): shuffle, sort by length inside windows of 8 batches, shuffle the
    batches.  Evaluation (no rng): sort everything by length.
    """
    order = list(range(len(rows)))
    if rng is None:
        order.sort(key=lambda i: len(rows[i].ids))
    else:
        rng.shuffle(order)
        window = batch_size * 8
        order = [i for s in range(0, len(order), window)
                 for i in sorted(order[s: s + window], key=lambda i: len(rows[i].ids))]
    chunks = [order[s: s + batch_size] for s in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(chunks)
    return chunks


def iter_batches(rows: Sequence[Row], batch_size: int, pad_id: int, kind: KindModel,
                 rng: random.Random | None = None) -> Iterator[Batch]:
    """Batches built as they are needed: on CUDA the CPU pads the next one while the GPU runs."""
    for chunk in batch_order(rows, batch_size, rng):
        yield collate([rows[i] for i in chunk], pad_id, kind)


def make_batches(rows: Sequence[Row], batch_size: int, pad_id: int, kind: KindModel,
                 rng: random.Random | None = None) -> list[Batch]:
    """All of an epoch's batches at once (validation, benchmarks)."""
    return list(iter_batches(rows, batch_size, pad_id, kind, rng))


# ---------------------------------------------------------------- setup


@dataclass
class TrainState:
    kind: KindModel
    model: EncoderWithHead
    tokenizer: Any
    config: TrainConfig
    device: torch.device
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    train_rows: list[Row]
    val_batches: list[Batch]
    rng: random.Random
    pad_id: int
    counts: dict[str, int] = field(default_factory=dict)


def _live(items: Sequence[Item], lam: float) -> list[Item]:
    """Rows whose loss term λ switches off would only cost compute: leave them out."""
    if lam >= 1.0:
        return [it for it in items if it.signal == 0]
    if lam <= 0.0:
        return [it for it in items if it.signal != 0]
    return list(items)


def setup(
    kind: KindModel, model: EncoderWithHead, tokenizer: Any, train_items: Sequence[Item],
    validation_items: Sequence[Item], config: TrainConfig,
) -> TrainState:
    """Seed, pick the device, wrap LoRA adapters or unfreeze everything, tokenise, build the optimiser."""
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    if config.finetune == "lora":
        from peft import LoraConfig, PeftModel, get_peft_model

        if not isinstance(model.encoder, PeftModel):
            lora = LoraConfig(r=config.policy.lora_r, lora_alpha=config.policy.lora_alpha, lora_dropout=config.lora_dropout,
                              target_modules=list(config.lora_targets))
            model.encoder = get_peft_model(model.encoder, lora)
    else:
        if hasattr(model.encoder, "merge_and_unload"):  # a LoRA parent fine-tuned in full from here on
            model.encoder = model.encoder.merge_and_unload()
        for p in model.encoder.parameters():
            p.requires_grad_(True)
    for p in model.head.parameters():
        p.requires_grad_(True)
    model.to(device)
    model.train()

    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": encoder_params, "lr": config.lr, "weight_decay": config.weight_decay},
            {"params": list(model.head.parameters()), "lr": config.lr * config.head_lr_scale, "weight_decay": 0.0},
        ]
    )
    amp_dtype = None
    if device.type == "cuda" and config.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    train = _live(train_items, config.lambda_data)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    val_rows = encode(tokenizer, validation_items, config.max_len, kind)
    counts = {
        "train_rows": len(train),
        "train_labelled": sum(it.signal == 0 for it in train),
        "train_feedback": sum(it.signal != 0 for it in train),
        "validation_rows": len(val_rows),
    }
    return TrainState(
        kind=kind,
        model=model,
        tokenizer=tokenizer,
        config=config,
        device=device,
        optimizer=optimizer,
        scaler=scaler,
        amp_dtype=amp_dtype,
        train_rows=encode(tokenizer, train, config.max_len, kind),
        val_batches=make_batches(val_rows, max(config.batch_size, 64), pad_id, kind),
        rng=random.Random(config.seed),
        pad_id=pad_id,
        counts=counts,
    )


# ---------------------------------------------------------------- fit and validate


def _autocast(state: TrainState) -> contextlib.AbstractContextManager:
    if state.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=state.device.type, dtype=state.amp_dtype)


def train_step(state: TrainState, batch: Batch) -> torch.Tensor:
    """One optimiser step on one batch (already on the device); returns the detached loss."""
    cfg, n = state.config, batch.n_data
    with _autocast(state):
        logits = state.model(batch.input_ids, batch.attention_mask)
    loss = combined_loss(
        state.kind,
        logits[:n], batch.labels[:n],
        logits[n:], batch.labels[n:], batch.signals[n:],
        cfg.lambda_data, cfg.variant,
        data_weights=batch.weights[:n], feedback_weights=batch.weights[n:],
        feedback_flips=None if batch.flips is None else batch.flips[n:],
    )
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    if cfg.grad_clip is not None:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    return loss.detach()


@torch.no_grad()
def validate(state: TrainState) -> float | None:
    """Validation loss, the early-stopping criterion; None without validation rows.

    Feedback is scored with the corrected form whatever the training variant (the signed one
    has no floor, so it cannot rank epochs): the bounded form where a client never flips, and
    what a noisy client's signal says once its flips are allowed for where it does.  With both
    kinds of rows the terms mix by λ;
    with one kind, that term alone.
    """
    if not state.val_batches:
        return None
    state.model.eval()
    d_sum = d_w = f_sum = f_w = 0.0
    for batch in state.val_batches:
        b, n = batch.to(state.device), batch.n_data
        with _autocast(state):
            logits = state.model(b.input_ids, b.attention_mask).float()
        if n > 0:
            d_sum += (state.kind.data_losses(logits[:n], b.labels[:n]) * b.weights[:n]).sum().item()
            d_w += b.weights[:n].sum().item()
        if n < len(b.labels):
            fb = feedback_term(state.kind, logits[n:], b.labels[n:], b.signals[n:], "corrected",
                               None if b.flips is None else b.flips[n:])
            f_sum += (fb * b.weights[n:]).sum().item()
            f_w += b.weights[n:].sum().item()
    state.model.train()
    lam = state.config.lambda_data
    if d_w > 0 and f_w > 0:
        return lam * d_sum / d_w + (1 - lam) * f_sum / f_w
    return d_sum / d_w if d_w > 0 else f_sum / f_w


def _trainable_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _restore(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in snapshot:
                p.copy_(snapshot[n])


def fit(
    state: TrainState,
    *,
    on_progress: ProgressFn | None = None,
    on_epoch: EpochFn | None = None,
    should_stop: StopFn | None = None,
) -> TrainResult:
    """Epochs with early stopping on the validation loss; the best epoch's weights are kept."""
    cfg, model = state.config, state.model
    started = time.perf_counter()
    if not state.train_rows:
        raise ValueError("nothing to train on: no rows with a live loss term")
    batches_per_epoch = math.ceil(len(state.train_rows) / cfg.batch_size)
    total_steps = cfg.epochs * batches_per_epoch
    curve: list[dict[str, Any]] = []
    best_loss, best_epoch, best = math.inf, 0, None
    bad_epochs, step, stopped_early = 0, 0, False
    last_report = time.monotonic()

    for epoch in range(1, cfg.epochs + 1):
        model.train()
        running = torch.zeros((), device=state.device)
        n = 0
        for batch in iter_batches(state.train_rows, cfg.batch_size, state.pad_id, state.kind, state.rng):
            if should_stop is not None and should_stop():
                raise TrainingInterrupted(f"stopped at epoch {epoch}, step {step}")
            running += train_step(state, batch.to(state.device))
            n += 1
            step += 1
            if on_progress is not None and time.monotonic() - last_report >= cfg.progress_every_s:
                on_progress(epoch, step, total_steps, (running / n).item())
                last_report = time.monotonic()
        train_loss = (running / n).item()
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training diverged: the loss became {train_loss} in epoch {epoch}")
        val_loss = validate(state)
        entry = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
        curve.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
        if on_progress is not None and (epoch == cfg.epochs or time.monotonic() - last_report >= cfg.progress_every_s):
            on_progress(epoch, step, total_steps, train_loss)
            last_report = time.monotonic()
        if val_loss is None:  # nothing to select on: the last epoch is the result
            best_epoch = epoch
            continue
        if val_loss < best_loss:
            best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
            best = _trainable_snapshot(model)
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                stopped_early = True
                break

    if best is not None and best_epoch != curve[-1]["epoch"]:
        _restore(model, best)
    model.eval()
    return TrainResult(
        loss_curve=curve,
        best_epoch=best_epoch,
        epochs_run=len(curve),
        steps=step,
        stopped_early=stopped_early,
        counts=dict(state.counts),
        device=state.device.type,
        duration_s=time.perf_counter() - started,
    )


def train(
    kind: KindModel,
    model: EncoderWithHead,
    tokenizer: Any,
    train_items: Sequence[Item],
    validation_items: Sequence[Item],
    config: TrainConfig,
    *,
    on_progress: ProgressFn | None = None,
    on_epoch: EpochFn | None = None,
    should_stop: StopFn | None = None,
) -> TrainResult:
    """setup + fit: trains `model` in place and returns what happened."""
    state = setup(kind, model, tokenizer, train_items, validation_items, config)
    return fit(state, on_progress=on_progress, on_epoch=on_epoch, should_stop=should_stop)


# ---------------------------------------------------------------- save


def save(
    model: EncoderWithHead,
    tokenizer: Any,
    *,
    parent_meta: VersionMeta,
    parent_path: Path,
    root: Path,
    name: str,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, str]:
    """Store the trained model as a version.  A LoRA model stores only its adapters and points at
    the version that holds the full encoder (its parent's base when the parent is LoRA too)."""
    if hasattr(model.encoder, "peft_config"):
        base = parent_meta.encoder["base"] if parent_meta.encoder.get("kind") == "lora" else str(parent_path)
        encoder = {"kind": "lora", "base": str(base)}
    else:
        encoder = {"kind": "full"}
    meta = VersionMeta(
        task=parent_meta.task,
        kind=parent_meta.kind,
        labels=list(parent_meta.labels),
        encoder=encoder,
        base_model=parent_meta.base_model,
        max_seq_len=parent_meta.max_seq_len,
        extra=extra or {},
    )
    return save_version(model, tokenizer, meta, root, name)

