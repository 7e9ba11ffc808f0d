"""Goal 1 on the device: Flywheel's CUDA path with the real MiniLM (SST-2 zero-shot).

device choice, version 0, prepare_engines on CUDA (and on CPU on the same machine, to compare),
accuracy of each engine on all SST-2 dev texts, the trainer (full and LoRA, AMP) a few steps,
engines of the trained version, explain.  Writes one JSON."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

out_path = Path(sys.argv[1])
data = Path(sys.argv[2])
res: dict = {"errors": {}}


def save() -> None:
    out_path.write_text(json.dumps(res, indent=1, default=str))


def step(name):
    def deco(fn):
        t0 = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as exc:
            res["errors"][name] = traceback.format_exc()[-3000:]
            print(f"!! {name}: {exc!r}", flush=True)
        res.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 2)
        print(f"== {name} done in {res['seconds'][name]} s", flush=True)
        save()
        return fn
    return deco


from app.core.config import Settings  # noqa: E402
from app.kinds import TaskSpec, get_kind, load_version  # noqa: E402
from app.learning import trainer as tr  # noqa: E402
from app.learning.dataset import Item  # noqa: E402
from app.model.encoder import resolve_device  # noqa: E402
from app.model.store import VersionMeta, save_version  # noqa: E402
from app.core.policy import Policy  # noqa: E402
from app.serving.scoring import LoadedModel, score_texts  # noqa: E402
from app.serving.engines import build, candidates_for, prepare_engines  # noqa: E402
from app.serving.onnx import cuda_available  # noqa: E402

CUDA = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu only in a local smoke run


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


settings = Settings()
base = settings.base_model
dev = resolve_device(settings.device)
cpu = torch.device("cpu")
res["device"] = {"FLYWHEEL_DEVICE": settings.device, "resolved": str(dev), "base_model": base,
                 "cuda_available": torch.cuda.is_available(),
                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                 "bf16_supported": torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None,
                 "ort_cuda_provider": cuda_available(), "candidates_cuda": candidates_for(torch.device("cuda")),
                 "torch": torch.__version__, "torch_cuda": torch.version.cuda}
print(res["device"], flush=True)

with (data / "sst2" / "dev.csv").open(newline="", encoding="utf-8") as fh:
    rows = [(r["text"].strip(), r["label"].strip()) for r in csv.DictReader(fh) if r["text"].strip()]
if os.environ.get("SMOKE"):
    rows = rows[:120]
N = len(rows)
N_LAB, N_FB, N_VAL = int(N * 0.46), int(N * 0.23), int(N * 0.08)
HELD = N_LAB + N_FB + N_VAL
labels = sorted({lab for _, lab in rows})
texts = [t for t, _ in rows]
gold = [lab for _, lab in rows]
root = Path("/tmp/gpucheck")
kind = get_kind("classification")
spec = TaskSpec(name="sst2", kind="classification", labels=labels)
v0: Path | None = None


def accuracy(model, device, name, tokenizer, max_len=128) -> dict:
    lm = LoadedModel(task_id=0, task="sst2", version_id=0, version=0, kind=kind, labels=labels, model=model,
                     tokenizer=tokenizer, device=device, max_len=max_len, engine=name)
    score_texts(lm, texts[:64], chunk=64)
    if device.type == "cuda":
        sync()
    t0 = time.perf_counter()
    got = [s.answer.label for s in score_texts(lm, texts, chunk=64)]
    dt = time.perf_counter() - t0
    return {"accuracy": 100.0 * sum(g == y for g, y in zip(got, gold)) / len(gold), "texts": len(gold),
            "texts_per_s_bs64": len(gold) / dt, "answers": got}


@step("version0")
def _v0():
    global v0
    model, tok = kind.build_zero_shot(base, spec)
    meta = VersionMeta(task="sst2", kind="classification", labels=labels, encoder={"kind": "full"}, base_model=base,
                       max_seq_len=128)
    v0, sha = save_version(model, tok, meta, root / "models" / "sst2", "v0")
    return {"path": str(v0), "sha256": sha}


@step("engines_cuda")
def _eng_cuda():
    return prepare_engines(v0, texts=texts, device=CUDA, max_len=128, chunk=32)


@step("engines_cpu_same_machine")
def _eng_cpu():
    return prepare_engines(v0, texts=texts, device=cpu, max_len=128, chunk=32)


@step("accuracy_sst2_dev")
def _acc():
    out = {}
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(v0 / "tokenizer", local_files_only=True)
    rec = res.get("engines_cuda") or {}
    for name, device in (("torch-fp32", CUDA), ("torch-fp16", CUDA),
                         ("onnx-fp32", CUDA), ("torch-fp32@cpu", cpu)):
        eng = name.split("@")[0]
        if eng == "onnx-fp32" and not cuda_available():
            out[name] = {"skipped": "ONNX Runtime has no CUDAExecutionProvider here"}
            continue
        try:
            model = build(v0, eng, device, rec if device.type == "cuda" else None)
            out[name] = accuracy(model, device, eng, tok)
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    ref = out.get("torch-fp32", {}).get("answers")
    for name, v in out.items():
        if ref and "answers" in v:
            v["agreement_with_cuda_fp32"] = sum(a == b for a, b in zip(ref, v["answers"])) / len(ref)
    for v in out.values():
        v.pop("answers", None)
    return out


def items_for(n_labelled: int, n_feedback: int, offset: int = 0):
    """Labelled rows, then ±1 feedback rows (shown = the zero-shot answer, signal = right/wrong)."""
    lab = [Item(text=t, label=labels.index(y)) for t, y in rows[offset:offset + n_labelled]]
    zs = res.get("zero_shot_answers") or []
    fb = []
    for i in range(offset + n_labelled, offset + n_labelled + n_feedback):
        shown = zs[i] if i < len(zs) else labels[0]
        fb.append(Item(text=rows[i][0], label=labels.index(shown), signal=1 if shown == rows[i][1] else -1))
    return lab + fb


@step("zero_shot_answers_for_feedback")
def _zs():
    model, tok, _ = load_version(v0, device=CUDA)
    lm = LoadedModel(task_id=0, task="sst2", version_id=0, version=0, kind=kind, labels=labels, model=model,
                     tokenizer=tok, device=CUDA, max_len=128)
    res["zero_shot_answers"] = [s.answer.label for s in score_texts(lm, texts, chunk=64)]
    return len(res["zero_shot_answers"])


def train(finetune: str, epochs: int, lam: float, n_lab: int, n_fb: int) -> dict:
    model, tok, _ = load_version(v0, device=CUDA)
    train_items = items_for(n_lab, n_fb)
    held = rows[HELD:]  # not trained on
    val = [Item(text=t, label=labels.index(y)) for t, y in rows[N_LAB + N_FB:HELD]]
    cfg = tr.TrainConfig(policy=Policy(epochs=epochs, batch_size=32, learning_rate=5e-5), lambda_data=lam,
                         finetune=finetune, device=CUDA.type, max_len=128, progress_every_s=0.0, seed=0)
    state = tr.setup(kind, model, tok, train_items, val, cfg)
    progress = []
    sync()
    t0 = time.perf_counter()
    result = tr.fit(state, on_progress=lambda e, s, t, loss: progress.append((e, s, t, round(loss, 4))))
    sync()
    dt = time.perf_counter() - t0
    params = {str(p.device) for p in state.model.parameters()}
    state.model.eval()
    lm = LoadedModel(task_id=0, task="sst2", version_id=0, version=1, kind=kind, labels=labels, model=state.model,
                     tokenizer=tok, device=CUDA, max_len=128)
    got = [s.answer.label for s in score_texts(lm, [t for t, _ in held], chunk=64)]
    zs = res.get("zero_shot_answers") or []
    return {"finetune": finetune, "amp_dtype": str(state.amp_dtype), "scaler_enabled": state.scaler.is_enabled(),
            "device": result.device, "param_devices": sorted(params), "steps": result.steps,
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "counts": result.counts,
            "loss_curve": result.loss_curve, "progress": progress[-5:], "fit_seconds": round(dt, 3),
            "train_texts_per_s": round(len(state.train_rows) * result.epochs_run / dt, 1),
            "held_out_texts": len(held),
            "held_out_accuracy_after": 100.0 * sum(g == y for g, (_, y) in zip(got, held)) / len(held),
            "held_out_accuracy_zero_shot": (100.0 * sum(zs[HELD + i] == y for i, (_, y) in enumerate(held)) / len(held)
                                            if len(zs) >= len(rows) else None),
            "_model": state.model, "_tok": tok}


trained = {}


@step("train_full_amp")
def _train_full():
    r = train("full", epochs=3, lam=0.5, n_lab=N_LAB, n_fb=N_FB)
    trained["full"] = (r.pop("_model"), r.pop("_tok"))
    return r


@step("train_lora_amp")
def _train_lora():
    r = train("lora", epochs=2, lam=0.5, n_lab=N_LAB, n_fb=N_FB)
    r.pop("_model"), r.pop("_tok")
    return r


@step("engines_cuda_trained_v1")
def _eng_v1():
    model, tok = trained["full"]
    meta = VersionMeta(task="sst2", kind="classification", labels=labels, encoder={"kind": "full"}, base_model=base,
                       max_seq_len=128)
    v1, _ = save_version(model.float().cpu(), tok, meta, root / "models" / "sst2", "v1")
    return prepare_engines(v1, texts=texts, device=CUDA, max_len=128, chunk=32)


@step("explain_cuda")
def _explain():
    from app.serving.explain import explain
    model, tok, _ = load_version(v0, device=CUDA)
    lm = LoadedModel(task_id=0, task="sst2", version_id=0, version=0, kind=kind, labels=labels, model=model,
                     tokenizer=tok, device=CUDA, max_len=128, engine="torch-fp32")
    t0 = time.perf_counter()
    e = explain(lm, "The acting was wonderful but the plot was a complete waste of time.")
    return {"seconds": round(time.perf_counter() - t0, 3), "result": e}


res.pop("zero_shot_answers", None)
res["max_cuda_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None
save()
print(json.dumps({k: v for k, v in res.items() if k not in ("engines_cpu_same_machine",)}, indent=1, default=str)[:12000])
