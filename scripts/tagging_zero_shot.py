"""What version 0 of a tagging task finds without examples, at several thresholds.

Version 0 tags a token when its state is closer to a label name's embedding than a threshold
(`app/kinds/tagging.py`, ZERO_SHOT_THRESHOLD).  This prints entity precision, recall and F1
(exact span and label) on the first N texts of a JSON lines file, per threshold.

    .venv/bin/python scripts/tagging_zero_shot.py ../shared/data/wnut16/test.jsonl --texts 300
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from app.core.config import Settings
from app.kinds.tagging import ZERO_SHOT_SCALE, Tagging, build_zero_shot, entity_metrics
from app.model.encoder import encode_texts
from app.learning.gate import model_outputs
from app.tools.datasets import read_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", type=Path)
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--thresholds", default="0.2,0.3,0.35,0.4,0.45,0.5")
    args = parser.parse_args()
    rows = read_records(args.jsonl)[: args.texts]
    labels = sorted({s["label"] for r in rows for s in r.value})
    model, tok = build_zero_shot(Settings().base_model, labels, {})
    texts = [r.text for r in rows]
    encoded = encode_texts(tok, texts, 128, offsets=True)
    truth = [[(s["start"], s["end"], labels.index(s["label"])) for s in r.value] for r in rows]
    kind = Tagging()
    print(f"{len(rows)} texts, {sum(map(len, truth))} entities, labels {labels}")
    print("threshold  precision  recall     F1  spans predicted")
    for threshold in map(float, args.thresholds.split(",")):
        with torch.no_grad():
            model.head.bias[0] = ZERO_SHOT_SCALE * threshold
        outputs = model_outputs(model, tok, texts, device=torch.device("cpu"), max_len=128)
        found = [list(t.spans) for t in kind.predicted_targets(outputs, encoded)]
        m = entity_metrics(truth, found)
        print(f"{threshold:9.2f}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['predicted']:15d}")


if __name__ == "__main__":
    main()
