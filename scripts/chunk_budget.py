"""Which padded-token budget per forward suits each engine?  The micro-batcher cuts a batch of
texts into length-sorted chunks of at most `CPU_CHUNK_TOKENS` padded tokens
(app/serving/scoring.py); this times the zero-shot all-MiniLM-L6-v2 on SST-2-like texts in
batches of 32 under several budgets, for PyTorch fp32 and ONNX Runtime int8 (best of 2 rounds).

    .venv/bin/python scripts/chunk_budget.py ../shared/data/sst2/dev.csv --texts 512
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from app.core.config import default_base_model
from app.db.versions import ActiveRow
from app.kinds import TaskSpec, kind_for_data
from app.model.store import VersionMeta, save_version
from app.serving.scoring import score_texts
from app.serving.engines import load_engine, prepare_engines
from app.tools.datasets import read_records, shape_of

BUDGETS = (128, 256, 512, 1024, None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", type=Path)
    p.add_argument("--texts", type=int, default=512)
    args = p.parse_args()
    rows = read_records(args.csv)[: args.texts]
    kind = kind_for_data(shape_of(args.csv))
    labels = kind.task_from_data([r.value for r in rows])["labels"]
    texts = [r.text for r in rows]
    cpu = torch.device("cpu")
    spec = TaskSpec(name="bench", kind=kind.name, labels=labels, descriptions={})
    model, tok = kind.build_zero_shot(default_base_model(), spec)
    with tempfile.TemporaryDirectory() as tmp:
        meta = VersionMeta(task="bench", kind=kind.name, labels=labels, encoder={"kind": "full"},
                           base_model=default_base_model())
        path, sha = save_version(model, tok, meta, Path(tmp), "v0")
        record = prepare_engines(path, texts=texts[:64], device=cpu, max_len=128)
        row = ActiveRow(task_id=0, task="bench", version_id=0, version=0, path=str(path), quantize=False, sha256=sha,
                        engines=record)
        for name in ("torch-fp32", "onnx-int8"):
            lm = load_engine(row, name, device=cpu, max_len=128)
            speeds = []
            for budget in BUDGETS:
                best = 0.0
                for _ in range(2):
                    started = time.perf_counter()
                    for i in range(0, len(texts), 32):
                        score_texts(lm, texts[i:i + 32], chunk=32, max_tokens=budget or 10**9)
                    best = max(best, len(texts) / (time.perf_counter() - started))
                speeds.append(best)
            print(f"{name}: " + " / ".join(f"{s:.0f}" for s in speeds) + " texts/s at a budget of "
                  + " / ".join(str(b or "no limit") for b in BUDGETS) + f" tokens ({len(texts)} texts, batches of 32)",
                  flush=True)


if __name__ == "__main__":
    main()
