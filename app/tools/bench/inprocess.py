"""The model work the benchmark does in its own process: the ceiling forward, int8 against
fp32, and the trainer against a bare PyTorch loop."""

from __future__ import annotations

import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from app.tools.datasets import Record

if TYPE_CHECKING:
    from app.kinds import KindModel

BATCH_SIZES = (1, 8, 32, 64)


def setting_default(name: str) -> Any:
    """A setting's default: the benchmark's servers get no FLYWHEEL_* variables but its own."""
    from app.core.config import Settings

    return Settings.model_fields[name].default


def ceiling(loaded, texts: list[str], sizes: tuple[int, ...], *,
            bs1_texts: int) -> tuple[dict[int, float], dict[int, float]]:
    """texts/s and CPU ms per text of the server's own forward (`score_texts`) on consecutive
    groups of the texts (arrival order, as a full micro-batch would see them)."""
    from app.serving.scoring import score_texts

    wall, cpu = {}, {}
    for bs in sizes:
        use = texts[:bs1_texts] if bs == 1 else texts
        score_texts(loaded, use[:bs], chunk=bs)  # warm this shape
        started, cpu0 = time.perf_counter(), time.process_time()
        for i in range(0, len(use), bs):
            score_texts(loaded, use[i:i + bs], chunk=bs)
        wall[bs] = len(use) / (time.perf_counter() - started)
        cpu[bs] = 1000 * (time.process_time() - cpu0) / len(use)
    return wall, cpu


def one_forward_ms(loaded, texts: list[str], n: int) -> float:
    """Median wall time of one single-text forward (the bare cost a c=1 request cannot avoid)."""
    from app.serving.scoring import score_texts

    times = []
    for t in texts[:n]:
        started = time.perf_counter()
        score_texts(loaded, [t], chunk=1)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def accuracy(loaded, rows: list[Record], bs: int = 64) -> tuple[float, float]:
    """(accuracy in points, texts/s) of zero-shot predictions against the file's labels."""
    from app.serving.scoring import score_texts

    texts = [r.text for r in rows]
    score_texts(loaded, texts[:bs], chunk=bs)
    started = time.perf_counter()
    got = []
    for i in range(0, len(texts), bs):
        got += [s.answer.label for s in score_texts(loaded, texts[i:i + bs], chunk=bs)]
    speed = len(texts) / (time.perf_counter() - started)
    return 100.0 * sum(g == r.value for g, r in zip(got, rows)) / len(rows), speed


def model_parts(row, rows: list[Record], want: set[str], log: Callable[[str], None]) -> dict[str, Any]:
    """Every engine's in-process forward (the best one's is the ceiling: wall and CPU time per
    text, one forward) and accuracy, and torch int8 against fp32, in this process."""
    from dataclasses import replace

    import torch

    from app.model.encoder import resolve_device
    from app.serving.engines import candidates_for, load_engine, load_for_serving

    cpu, max_len = torch.device("cpu"), setting_default("max_seq_len")
    # The server's device (its FLYWHEEL_DEVICE is the default): CUDA where present.  The engine
    # record was prepared there too, so its parity verdicts are this device's.  int8 stays on CPU.
    dev = resolve_device(setting_default("device"))
    texts = [r.text for r in rows]
    out: dict[str, Any] = {}
    # Load (and warm) here, forward on a single inference thread, exactly as the server does.
    # It matters on CPU: libgomp spins 300,000 times at every barrier while a process has no
    # more OpenMP threads than cores, and throttles to 100 once it has more (two threads that
    # ran torch ops, like the server's loader and inference threads).  The spinning version
    # collapses the moment anything else wants a core, so a ceiling measured on this process's
    # main thread alone would not be the server's forward.
    infer = ThreadPoolExecutor(1, thread_name_prefix="infer")
    loaded = load_for_serving(replace(row, engines={}, quantize=False), device=cpu, max_len=max_len)  # torch fp32
    if "ceiling" in want:
        passed = {n for n, c in (row.engines or {}).get("candidates", {}).items() if c.get("ok")}
        engines: dict[str, Any] = {}
        for name in dict.fromkeys(["torch-fp32", *candidates_for(dev)]):  # fp32: the reference, on CUDA too
            log(f"engine {name}: in-process forward at batch sizes 1 and 32, accuracy")
            try:
                lm = load_engine(row, name, device=dev, max_len=max_len)
            except Exception as exc:
                engines[name] = {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            wall, _ = infer.submit(ceiling, lm, texts, (1, 32), bs1_texts=min(len(texts), 200)).result()
            entry = {"texts_per_s_bs1": wall[1], "texts_per_s_bs32": wall[32], "parity_ok": name in passed,
                     "one_forward_ms": infer.submit(one_forward_ms, lm, texts, min(len(texts), 100)).result()}
            if "int8" in want:  # the kind's answers are labels: the file's are answers to score
                entry["accuracy"] = infer.submit(accuracy, lm, rows).result()[0]
            engines[name] = entry
        out["engines"] = engines
        ranked = [n for n, e in engines.items() if "texts_per_s_bs32" in e and (e["parity_ok"] or n == "torch-fp32")]
        best = max(ranked, key=lambda n: engines[n]["texts_per_s_bs32"])
        out["best_engine"] = best
        log(f"ceiling: the best engine ({best}) at batch sizes " + ", ".join(map(str, BATCH_SIZES)))
        best_loaded = load_engine(row, best, device=dev, max_len=max_len)
        wall, cpu_ms = infer.submit(ceiling, best_loaded, texts, BATCH_SIZES, bs1_texts=min(len(texts), 200)).result()
        out["ceiling_texts_per_s"] = {str(k): v for k, v in wall.items()}
        out["ceiling_cpu_ms_per_text"] = {str(k): v for k, v in cpu_ms.items()}
        out["one_forward_ms"] = infer.submit(one_forward_ms, best_loaded, texts, min(len(texts), 100)).result()
    if "int8" in want:
        log("int8: zero-shot accuracy and speed against fp32")
        acc32, speed32 = infer.submit(accuracy, loaded, rows).result()
        q = load_for_serving(replace(row, quantize=True), device=cpu, max_len=max_len)
        acc8, speed8 = infer.submit(accuracy, q, rows).result()
        out["int8"] = {"accuracy_fp32": acc32, "accuracy_int8": acc8, "texts_per_s_fp32_bs64": speed32,
                       "texts_per_s_int8_bs64": speed8, "texts": len(rows)}
        out["int8_speedup_bs64"] = speed8 / speed32
        out["int8_accuracy_delta_points"] = acc8 - acc32
    infer.shutdown()
    return out


def trainer_vs_bare(path: Path, rows: list[Record], labels: list[str], reps: int, kind: KindModel) -> dict[str, Any]:
    """texts/s of `trainer.fit` (one epoch) and of a bare PyTorch loop over the same batches
    (the kind's data loss, backward, clip, AdamW).  `rows` hold labels of the task: answers the
    kind's `target` takes as they are."""
    import torch

    from app.learning import trainer as tr
    from app.kinds import TaskSpec, load_version
    from app.learning.dataset import Item
    from app.model.encoder import resolve_device
    from app.core.policy import Policy

    dev = resolve_device(setting_default("device"))  # where the worker trains: CUDA where present
    # The trainer autocasts on CUDA (bf16 where supported); the bare loop does the same, so the
    # ratio measures the trainer's overhead, not mixed precision.
    amp = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else None
    spec = TaskSpec(name="bench", kind=kind.name, labels=labels)
    items = [Item(text=r.text, label=kind.target(spec, r.value)) for r in rows]
    cfg = tr.TrainConfig(policy=Policy(epochs=1, batch_size=16), lambda_data=1.0, device=dev.type, max_len=128,
                         progress_every_s=3600.0, seed=0, amp=amp is not None)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def run_trainer() -> float:
        model, tok, _ = load_version(path, device=dev)
        state = tr.setup(kind, model, tok, items, [], cfg)
        first = tr.make_batches(state.train_rows, cfg.batch_size, state.pad_id, kind, random.Random(99))[0]
        tr.train_step(state, first.to(dev))  # warm-up step, outside the clock (the bare loop gets one too)
        sync()
        started = time.perf_counter()
        result = tr.fit(state)
        sync()
        elapsed = time.perf_counter() - started
        return len(state.train_rows) * result.epochs_run / elapsed

    def run_bare() -> float:
        model, tok, _ = load_version(path, device=dev)
        rows_ = tr.encode(tok, items, cfg.max_len, kind)
        pad = tok.pad_token_id or 0
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def step(b) -> None:
            b = b.to(dev)
            with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(b.input_ids, b.attention_mask)
            loss = kind.data_losses(logits, b.labels).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or 1.0)
            opt.step()

        step(tr.make_batches(rows_, cfg.batch_size, pad, kind, random.Random(99))[0])
        sync()
        started = time.perf_counter()
        for b in tr.make_batches(rows_, cfg.batch_size, pad, kind, random.Random(cfg.seed)):  # fit's epoch-1 batches
            step(b)
        sync()
        return len(rows_) / (time.perf_counter() - started)

    trainer_runs, bare_runs = [], []
    for _ in range(reps):  # interleaved, so drifting background load hits both alike
        trainer_runs.append(run_trainer())
        bare_runs.append(run_bare())
    best_t, best_b = max(trainer_runs), max(bare_runs)
    return {"trainer_texts_per_s": best_t, "bare_loop_texts_per_s": best_b, "ratio": best_t / best_b,
            "texts": len(rows), "batch_size": cfg.batch_size, "reps": reps, "device": dev.type,
            "autocast": str(amp).replace("torch.", "") if amp is not None else None,
            "trainer_runs": trainer_runs, "bare_runs": bare_runs}
