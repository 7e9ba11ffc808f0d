"""The trainer on the tiny BERT: full and LoRA fine-tuning learn, LoRA stores only adapters,
a seed reproduces a run, and early stopping keeps the best epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.learning.dataset import Item
from app.kinds import load_version
from app.kinds.classification import Classification, build_zero_shot, predict_proba
from app.learning.trainer import TrainConfig, fit, save, setup, train, validate
from app.model.store import VersionMeta, read_meta, save_version
from app.core.policy import Policy
from support.learning import LABELS, accuracy_of, synthetic

KIND = Classification()

PAIRS = synthetic(60, seed=1)
TRAIN = [Item(t, LABELS.index(lab)) for t, lab in PAIRS[:40]]
HELD_OUT = PAIRS[40:]
VALIDATION = [Item(t, LABELS.index(lab)) for t, lab in HELD_OUT]


def _config(**kw: object) -> TrainConfig:
    """Fast settings for the tiny BERT; policy keys go into the task's Policy, the rest to TrainConfig."""
    policy: dict[str, object] = dict(epochs=6, batch_size=8, learning_rate=3e-3, patience=6)
    values: dict[str, object] = dict(max_len=32, device="cpu")
    for k, v in kw.items():
        (policy if k in Policy.model_fields else values)[k] = v
    return TrainConfig(policy=Policy(**policy), **values)  # type: ignore[arg-type]


def _p_true(model: torch.nn.Module, tokenizer, pairs) -> float:
    probs = predict_proba(model, tokenizer, [t for t, _ in pairs], max_len=32, device=torch.device("cpu"))
    return sum(probs[i, LABELS.index(lab)].item() for i, (_, lab) in enumerate(pairs)) / len(pairs)


def test_full_fine_tuning_moves_predictions_toward_the_labels(tiny_model_dir: Path) -> None:
    model, tok = build_zero_shot(str(tiny_model_dir), LABELS)
    before_p, before_acc = _p_true(model, tok, HELD_OUT), accuracy_of(model, tok, HELD_OUT)
    result = train(KIND, model, tok, TRAIN, VALIDATION, _config())
    assert _p_true(model, tok, HELD_OUT) > before_p
    assert accuracy_of(model, tok, HELD_OUT) > before_acc
    assert result.device == "cpu" and result.steps > 0 and result.counts["train_rows"] == len(TRAIN)
    assert [e["epoch"] for e in result.loss_curve] == list(range(1, result.epochs_run + 1))


def test_feedback_alone_trains_the_model(tiny_model_dir: Path) -> None:
    model, tok = build_zero_shot(str(tiny_model_dir), LABELS)
    wrong = {0: 1, 1: 0}
    # +1 on the right label for half the texts, −1 on the wrong label for the other half.
    items = [Item(it.text, it.label, +1) if i % 2 else Item(it.text, wrong[it.label], -1) for i, it in enumerate(TRAIN)]
    before = _p_true(model, tok, PAIRS[:40])
    train(KIND, model, tok, items, [], _config(lambda_data=0.0))
    assert _p_true(model, tok, PAIRS[:40]) > before


def test_lora_trains_and_the_version_stores_only_adapters(tiny_model_dir: Path, tmp_path: Path) -> None:
    parent_model, tok = build_zero_shot(str(tiny_model_dir), LABELS)
    meta = VersionMeta(task="t", kind="classification", labels=LABELS, encoder={"kind": "full"},
                       base_model=str(tiny_model_dir), max_seq_len=32)
    parent_path, _ = save_version(parent_model, tok, meta, tmp_path, "v0")

    model, tok, parent_meta = load_version(parent_path, device=torch.device("cpu"), trainable_lora=True)
    base_before = {n: p.detach().clone() for n, p in model.encoder.named_parameters()}
    before = _p_true(model, tok, PAIRS[:40])
    train(KIND, model, tok, TRAIN, [], _config(finetune="lora", learning_rate=1e-2, epochs=10))
    assert _p_true(model, tok, PAIRS[:40]) > before
    frozen = {n: p for n, p in model.encoder.get_base_model().named_parameters() if "lora_" not in n}
    assert all(torch.equal(p, base_before[n]) for n, p in frozen.items() if n in base_before)

    path, _ = save(model, tok, parent_meta=parent_meta, parent_path=parent_path, root=tmp_path, name="v1")
    assert (path / "adapter").is_dir() and not (path / "encoder").exists()
    adapter_bytes = sum(f.stat().st_size for f in (path / "adapter").rglob("*") if f.is_file())
    encoder_bytes = sum(f.stat().st_size for f in (parent_path / "encoder").rglob("*") if f.is_file())
    assert adapter_bytes < encoder_bytes / 3
    assert read_meta(path).encoder == {"kind": "lora", "base": str(parent_path)}
    served, served_tok, _ = load_version(path, device=torch.device("cpu"))
    assert _p_true(served, served_tok, PAIRS[:40]) == pytest.approx(_p_true(model, tok, PAIRS[:40]), abs=1e-5)


def test_same_seed_same_result(tiny_model_dir: Path) -> None:
    runs = []
    for _ in range(2):
        model, tok = build_zero_shot(str(tiny_model_dir), LABELS)
        result = train(KIND, model, tok, TRAIN, VALIDATION, _config(epochs=3, seed=7))
        runs.append((result.loss_curve, model.head.weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])
    model, tok = build_zero_shot(str(tiny_model_dir), LABELS)
    other = train(KIND, model, tok, TRAIN, VALIDATION, _config(epochs=3, seed=8))
    assert other.loss_curve != runs[0][0]


def test_early_stopping_keeps_the_best_epoch(tiny_model_dir: Path) -> None:
    model, tok = build_zero_shot(str(tiny_model_dir), LABELS)
    # Validation says the opposite of training: the more it learns, the worse validation gets.
    flipped = [Item(it.text, 1 - it.label) for it in TRAIN[:16]]
    state = setup(KIND, model, tok, TRAIN, flipped, _config(epochs=12, patience=2, lambda_data=1.0))
    result = fit(state)
    val = [e["val_loss"] for e in result.loss_curve]
    assert result.stopped_early and result.epochs_run < 12
    assert result.best_epoch == 1 + val.index(min(val)) and result.best_epoch < result.epochs_run
    assert validate(state) == pytest.approx(min(val), rel=1e-5)  # the weights are the best epoch's


def test_progress_is_reported_with_steps_and_total(tiny_model_dir: Path) -> None:
    model, tok = build_zero_shot(str(tiny_model_dir), LABELS)
    seen: list[tuple[int, int, int, float]] = []
    epochs: list[dict] = []
    result = train(KIND, model, tok, TRAIN, VALIDATION, _config(epochs=2, progress_every_s=0.0),
                   on_progress=lambda *a: seen.append(a), on_epoch=epochs.append)
    steps = [s for _, s, _, _ in seen]
    assert steps == sorted(steps) and steps[-1] == result.steps
    assert {total for _, _, total, _ in seen} == {2 * 5}
    assert epochs == result.loss_curve


@pytest.mark.parametrize(
    "field, value", [("epochs", 0), ("learning_rate", 0.0), ("lambda_data", 1.5), ("variant", "negated"),
                     ("finetune", "qlora"), ("device", "tpu"), ("max_len", 4)]
)
def test_config_refuses_bad_values(field: str, value: object) -> None:
    """Bad values are refused naming the field, whether it is the task's policy's or the trainer's."""
    with pytest.raises(ValueError, match=field):
        _config(**{field: value})


def test_a_diverging_run_fails_loudly_instead_of_saving_nan(tiny_model_dir: Path) -> None:
    model, tok = build_zero_shot(str(tiny_model_dir), LABELS)
    with torch.no_grad():
        model.head.log_scale.fill_(float("inf"))  # logits become inf/nan from the first step
    with pytest.raises(FloatingPointError, match="diverged"):
        train(KIND, model, tok, TRAIN, [], _config(epochs=1))
