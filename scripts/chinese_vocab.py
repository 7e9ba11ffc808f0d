"""Does a growing vocabulary help the bundled all-MiniLM-L6-v2 on Chinese?  For one data set
(a folder with train and test files, a text,label CSV or JSON lines of {text, spans}; the kind
that reads the shape makes the task), train the same model on the same examples twice, with the
tokenizer as it is and with every [UNK] character of the training texts made a token of its own
(app/model/vocab.py), and score both on held-out texts (entity F1 where the kind reports one,
else the share of right answers), beside the zero-shot model they start from.  Arms:
`as-is`, `grow` (new rows start as [UNK]'s), `grow-spread` (plus noise of one standard
deviation: what runs do).

    .venv/bin/python scripts/chinese_vocab.py ../shared/data/thucnews --train 2000 --test 1000 --epochs 2
    .venv/bin/python scripts/chinese_vocab.py ../shared/data/msra-ner --train 1500 --test 500 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from app.core.config import default_base_model
from app.kinds import TaskSpec, kind_for_data
from app.learning import trainer as tr
from app.learning.dataset import Item
from app.learning.gate import evaluate
from app.model.vocab import grow_vocabulary, unknown_chars
from app.core.policy import Policy
from app.tools.datasets import Record, read_records, shape_of


def read(folder: Path, split: str) -> tuple[str, list[Record]]:
    """(the file's shape, its rows): `<split>.csv`, else `<split>.jsonl`."""
    path = folder / f"{split}.csv"
    if not path.exists():
        path = folder / f"{split}.jsonl"
    return shape_of(path), read_records(path)


def score(metrics: dict) -> float:
    """Entity F1 (exact span and label) where the kind reports one, else the share of right answers."""
    return metrics.get("examples", {}).get("f1", metrics["score"])


def items_of(kind, spec: TaskSpec, rows: list[Record]) -> list[Item]:
    return [Item(r.text, kind.target(spec, kind.canonical(spec, r.value, text=r.text, field=kind.value_field)))
            for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--arms", default="as-is,grow,grow-spread",
                   help="as-is; grow (new rows start as [UNK]'s); grow-spread (plus noise of one standard deviation)")
    args = p.parse_args()
    shape, train_rows = read(args.folder, "train")
    _, test_rows = read(args.folder, "test")
    rng = random.Random(args.seed)
    rng.shuffle(train_rows)
    rng.shuffle(test_rows)
    train_rows, test_rows = train_rows[: args.train], test_rows[: args.test]
    kind = kind_for_data(shape)
    labels = kind.task_from_data([r.value for r in train_rows])["labels"]
    spec = TaskSpec(name="zh", kind=kind.name, labels=labels, descriptions={})
    base, cpu = default_base_model(), torch.device("cpu")
    train_items, test_items = items_of(kind, spec, train_rows), items_of(kind, spec, test_rows)
    result: dict = {"data": str(args.folder), "kind": kind.name, "labels": labels, "train": len(train_items),
                    "test": len(test_items), "epochs": args.epochs, "base_model": base, "arms": {}}
    for arm in args.arms.split(","):
        model, tok = kind.build_zero_shot(base, spec)
        zero = score(evaluate(kind, model, tok, test_items, labels, device=cpu, max_len=128).metrics)
        texts = [it.text for it in train_items]
        unk_share = sum(t == tok.unk_token for text in texts[:500] for t in tok.tokenize(text)) / max(
            1, sum(len(tok.tokenize(text)) for text in texts[:500]))
        added = (grow_vocabulary(model, tok, unknown_chars(tok, texts), spread=1.0 if arm == "grow-spread" else 0.0)
                 if arm.startswith("grow") else 0)
        cfg = tr.TrainConfig(policy=Policy(epochs=args.epochs, batch_size=16, patience=args.epochs), lambda_data=1.0,
                             device="cpu", max_len=128, seed=args.seed)
        started = time.perf_counter()
        state = tr.setup(kind, model, tok, train_items, test_items[:200], cfg)
        tr.fit(state)
        seconds = time.perf_counter() - started
        after = score(evaluate(kind, state.model, tok, test_items, labels, device=cpu, max_len=128).metrics)
        result["arms"][arm] = {"zero_shot": zero, "trained": after, "tokens_added": added,
                               "unk_share_of_tokens_before": round(unk_share, 4), "train_seconds": round(seconds, 1)}
        print(f"{arm:6} zero-shot {zero:.4f}  trained {after:.4f}  tokens added {added}  "
              f"[UNK] share {unk_share:.2%}  {seconds:.0f}s", flush=True)
    base_arm = result["arms"].get("as-is")
    for arm, r in result["arms"].items():
        if base_arm is not None and arm != "as-is":
            print(f"{arm}: {r['trained']:.4f} against as-is {base_arm['trained']:.4f} "
                  f"({r['trained'] - base_arm['trained']:+.4f}) on {len(test_items)} held-out texts, "
                  f"{len(train_items)} training texts, {args.epochs} epochs")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
