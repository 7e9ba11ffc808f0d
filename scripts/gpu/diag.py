"""Why torch-fp16 served 4x slower than torch-fp32 on the H100 in call 1 (and the first bf16
training epoch ran 6x slower than the second): each mode in a fresh process, so no shape is
warm.  Modes: the engine/trainer as run before the fix (cuDNN SDPA enabled, torch's default)
and with cuDNN taken out of SDPA's backends (what resolve_device now does on CUDA)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

MODES = ("fp32|cudnn-on", "fp16|cudnn-on", "fp16|cudnn-off", "train-bf16|cudnn-on", "train-bf16|cudnn-off")


def child(mode: str, v0: str, data: str) -> dict:
    from app.kinds import get_kind, load_version
    from app.learning import trainer as tr
    from app.learning.dataset import Item
    from app.model.encoder import resolve_device
    from app.core.policy import Policy
    from app.serving.scoring import LoadedModel, score_texts
    from app.serving.engines import build

    what, cudnn = mode.split("|")
    dev = resolve_device("auto")
    torch.backends.cuda.enable_cudnn_sdp(cudnn == "cudnn-on")
    with open(data, newline="", encoding="utf-8") as fh:
        rows = [(r["text"].strip(), r["label"].strip()) for r in csv.DictReader(fh) if r["text"].strip()]
    texts = [t for t, _ in rows]
    labels = sorted({y for _, y in rows})
    kind = get_kind("classification")
    out: dict = {"mode": mode, "cudnn_sdp_enabled": torch.backends.cuda.cudnn_sdp_enabled()}
    if what.startswith("train"):
        items = [Item(text=t, label=labels.index(y)) for t, y in rows[:256]]
        cfg = tr.TrainConfig(policy=Policy(epochs=1, batch_size=16), lambda_data=1.0, device="cuda", max_len=128,
                             progress_every_s=3600.0, seed=0)
        for rep in (1, 2):
            model, tok, _ = load_version(Path(v0), device=dev)
            state = tr.setup(kind, model, tok, items, [], cfg)
            torch.backends.cuda.enable_cudnn_sdp(cudnn == "cudnn-on")  # setup resolved the device again
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            tr.fit(state)
            torch.cuda.synchronize()
            out[f"epoch_texts_per_s_run{rep}"] = round(256 / (time.perf_counter() - t0), 1)
        return out
    model = build(Path(v0), "torch-fp16" if what == "fp16" else "torch-fp32", dev, None)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(Path(v0) / "tokenizer", local_files_only=True)
    lm = LoadedModel(task_id=0, task="sst2", version_id=0, version=0, kind=kind, labels=labels, model=model,
                     tokenizer=tok, device=dev, max_len=128)
    score_texts(lm, ["warm up the kernels"], chunk=1)
    # the ceiling's way: consecutive groups (fresh shapes), then the same groups again (warm)
    for label, bs, use in (("bs32", 32, texts), ("bs1", 1, texts[:200])):
        for rep in ("cold", "warm"):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(0, len(use), bs):
                score_texts(lm, use[i:i + bs], chunk=bs)
            out[f"{label}_{rep}_texts_per_s"] = round(len(use) / (time.perf_counter() - t0), 1)
    # which kernels a fresh shape runs
    from torch.profiler import ProfilerActivity, profile
    fresh = ["a fresh shape " * 9 + "end"] * 7
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        score_texts(lm, fresh, chunk=7)
        torch.cuda.synchronize()
    ev = prof.key_averages()
    cpu_top = sorted(ev, key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
    out["fresh_shape_top_cpu_ops"] = [(e.key[:80], round(e.self_cpu_time_total / 1000, 2)) for e in cpu_top]
    out["attention_kernels"] = sorted({e.key[:90] for e in ev if any(s in e.key.lower() for s in
                                       ("cudnn", "fmha", "flash", "attention", "sdpa", "mem_eff"))})[:12]
    return out


if __name__ == "__main__":
    if sys.argv[1] == "child":
        print("RESULT " + json.dumps(child(sys.argv[2], sys.argv[3], sys.argv[4])), flush=True)
        sys.exit(0)
    out_path, data = Path(sys.argv[1]), sys.argv[2]
    from app.kinds import TaskSpec, get_kind
    from app.model.store import VersionMeta, save_version
    from app.core.config import Settings

    base = Settings().base_model
    kind = get_kind("classification")
    model, tok = kind.build_zero_shot(base, TaskSpec(name="sst2", kind="classification", labels=["negative", "positive"]))
    v0, _ = save_version(model, tok, VersionMeta(task="sst2", kind="classification", labels=["negative", "positive"],
                                                 encoder={"kind": "full"}, base_model=base), Path("/tmp/diag"), "v0")
    results = []
    for mode in MODES:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, __file__, "child", mode, str(v0), data], capture_output=True, text=True,
                           timeout=120)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
        r = json.loads(line[7:]) if line else {"mode": mode, "error": (p.stderr or p.stdout)[-2000:]}
        r["process_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(r), flush=True)
        results.append(r)
        out_path.write_text(json.dumps({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0),
                                        "results": results}, indent=1))
