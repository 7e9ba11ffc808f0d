"""Is an engine's answer to a text the same alone as in a micro-batch?  And what does answering
int8 one text at a time cost?

Builds version 0 of an SST-2 task (zero-shot MiniLM), exports its engines as the worker does,
then for each engine scores the texts alone and in consecutive batches of 32 (padded together
in one forward, as the server did before int8 went row by row) and counts the labels and scores
that differ; and times texts/s in batches of 32 against one text at a time.

    .venv/bin/python scripts/batch_invariance.py --texts 872
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import AutoTokenizer

from app.core.config import default_base_model
from app.kinds import get_kind, kind_for_data
from app.model.store import read_meta
from app.services.tasks import build_version_zero
from app.serving.scoring import LoadedModel, forward_ids
from app.serving.engines import build, candidates_for, prepare_engines
from app.tools.datasets import find_shared, read_records, shape_of

DATA = find_shared("sst2", "dev.csv")


def scores(loaded: LoadedModel, texts: list[str], batch: int) -> list[list[float]]:
    """Each text's class probabilities, `batch` texts padded into one forward."""
    from app.model.encoder import encode_texts

    tok = loaded.tokenizer
    ids = [e.ids for e in encode_texts(tok, texts, loaded.max_len, offsets=False)]
    out: list[list[float]] = []
    for i in range(0, len(ids), batch):
        logits = forward_ids(loaded.model, ids[i:i + batch], pad_id=tok.pad_token_id or 0, device=loaded.device)
        out.extend(torch.softmax(logits, dim=-1).tolist())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=872)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    if DATA is None:
        p.error("SST-2 dev (../shared/data/sst2/dev.csv) was not found beside the project")
    records = read_records(DATA)
    texts = [r.text for r in records][:args.texts]
    kind = kind_for_data(shape_of(DATA))
    torch.set_num_threads(2)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        task = SimpleNamespace(name="sst2", kind=kind.name, labels=kind.task_from_data([r.value for r in records])["labels"],
                               descriptions={}, value_range=None, anchors=None, policy={})
        path, _ = build_version_zero(task, base_model=default_base_model(), models_dir=Path(tmp), max_seq_len=128)
        prepare_engines(path, texts=texts[:64], device=device, max_len=128)
        meta = read_meta(path)
        tok = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
        result = {}
        for name in candidates_for(device):
            model = build(path, name, device, None)
            lm = LoadedModel(0, "sst2", 0, 0, get_kind(meta.kind), list(meta.labels), model, tok, device, 128,
                             quantized=name.endswith("int8"), engine=name)
            alone = scores(lm, texts, 1)
            batched = scores(lm, texts, args.batch)
            differ = sum(max(range(2), key=a.__getitem__) != max(range(2), key=b.__getitem__)
                         for a, b in zip(alone, batched))
            gap = max(abs(x - y) for a, b in zip(alone, batched) for x, y in zip(a, b))
            timing = {}
            for r in range(2):  # alternate, keep the best of each
                for bs in ((1, args.batch) if r == 0 else (args.batch, 1)):
                    started = time.perf_counter()
                    scores(lm, texts, bs)
                    tps = len(texts) / (time.perf_counter() - started)
                    timing[bs] = max(tps, timing.get(bs, 0.0))
            result[name] = {"labels_differ": differ, "max_score_diff": round(gap, 6),
                            "texts_per_s_alone": round(timing[1], 1),
                            f"texts_per_s_batch_{args.batch}": round(timing[args.batch], 1),
                            "alone_over_batched": round(timing[1] / timing[args.batch], 3)}
            print(name, json.dumps(result[name]))
        print(json.dumps({"texts": len(texts), "batch": args.batch, "engines": result}, indent=1))


if __name__ == "__main__":
    main()
