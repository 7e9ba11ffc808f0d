"""Do explanations mean something?  For each text, delete the k spans the explanation weighs
most towards the predicted label, and, separately, k spans picked at random; how much does
the predicted label's probability drop?  A faithful explanation's deletions cost more.  The
model is the zero-shot version 0 the API would serve for a task over the CSV's labels.

    .venv/bin/python scripts/explain_faithfulness.py ../shared/data/sst2/dev.csv --texts 200 --k 2
    .venv/bin/python scripts/explain_faithfulness.py ../shared/data/clinc150/test.csv --texts 200 --k 2
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import torch

from app.core.config import default_base_model
from app.kinds import TaskSpec, kind_for_data
from app.serving.scoring import LoadedModel, score_texts
from app.serving.explain import explain
from app.tools.datasets import read_records, shape_of


def without(text: str, spans: list[dict]) -> str:
    out, at = [], 0
    for s in sorted(spans, key=lambda a: a["start"]):
        out.append(text[at:s["start"]])
        at = s["end"]
    return "".join(out) + text[at:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", type=Path)
    p.add_argument("--texts", type=int, default=200)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    rows = read_records(args.csv)
    kind = kind_for_data(shape_of(args.csv))
    if not kind.explainable:
        p.error(f"{args.csv}: a {kind.name} task has no explanations (a text,label CSV makes one that has)")
    rng = random.Random(args.seed)
    labels = kind.task_from_data([r.value for r in rows])["labels"]
    rng.shuffle(rows)
    model, tok = kind.build_zero_shot(default_base_model(), TaskSpec(name="x", kind=kind.name,
                                                                      labels=labels, descriptions={}))
    loaded = LoadedModel(task_id=0, task="x", version_id=0, version=0, kind=kind, labels=labels, model=model.eval(),
                         tokenizer=tok, device=torch.device("cpu"), max_len=128)

    def prob(text: str, label: str) -> float:
        return score_texts(loaded, [text], chunk=1)[0].answer.scores[label]

    top_drops, random_drops, wins, ms = [], [], 0, []
    used = 0
    for text in (r.text for r in rows):
        if used == args.texts:
            break
        answer = explain(loaded, text)
        spans = answer["attributions"]
        if len(spans) <= args.k:
            continue
        used += 1
        ms.append(answer["ms"])
        base = answer["score"]
        top = sorted(spans, key=lambda a: -a["weight"])[: args.k]
        rand = rng.sample(spans, args.k)
        top_drops.append(base - prob(without(text, top), answer["label"]))
        random_drops.append(base - prob(without(text, rand), answer["label"]))
        wins += top_drops[-1] > random_drops[-1]
    result = {"data": str(args.csv), "texts": used, "k": args.k, "labels": len(labels),
              "mean_drop_top_k": statistics.mean(top_drops), "mean_drop_random_k": statistics.mean(random_drops),
              "share_top_k_drops_more": wins / used, "median_ms_per_explanation": statistics.median(ms)}
    print(f"{args.csv.parent.name}: deleting the top-{args.k} attributed spans lowers the predicted label's "
          f"probability by {result['mean_drop_top_k']:.4f} on average, {args.k} random spans by "
          f"{result['mean_drop_random_k']:.4f}; top-k drops more on {result['share_top_k_drops_more']:.0%} of "
          f"{used} texts; {result['median_ms_per_explanation']:.0f} ms per explanation (median)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
