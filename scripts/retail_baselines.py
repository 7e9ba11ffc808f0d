"""The baselines a recommender must beat on Online Retail (issue 24), on held-out customers.

A seeded 20 % of the customers is kept aside; every recommender is fit on the other 80 %'s baskets
and orders, for each held-out customer with an earlier basket, their last basket's items among 100
candidates (the rest drawn by training popularity); NDCG@10 with a bootstrap interval over customers
(`app/tools/offline_eval.py`).  Vowpal Wabbit's row needs `pip install vowpalwabbit` (it is not a
dependency of Flywheel) and is left out without it.  Writes `<out>/baselines.json` and `<out>/README.md`.

    .venv/bin/python scripts/retail_baselines.py --out reports/online-retail
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from app.core.config import default_base_model
from app.tools.datasets import find_shared, read_baskets, read_catalogue
from app.tools.offline_eval import Result, basket_popularity, evaluate, make_cases, per_case_ndcg, split_customers
from app.tools.recommenders import BoughtBefore, CoOccurrence, Ease, Popularity, Recommender, TextSimilarity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=find_shared("online-retail"))
    parser.add_argument("--out", type=Path, default=Path("reports/online-retail"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held-out", type=float, default=0.2)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--lam", type=float, nargs="+", default=[50.0, 250.0, 1000.0],
                        help="EASE L2 weights; each is reported (the best is picked on the test split, say so)")
    parser.add_argument("--base-model", default=None, help="encoder for the text baseline (default: the bundled MiniLM)")
    args = parser.parse_args()
    if args.data is None:
        sys.exit("no ../shared/data/online-retail here; pass --data")
    started = time.perf_counter()
    torch.set_num_threads(2)
    baskets = read_baskets(args.data / "purchases.csv")
    catalogue = read_catalogue(args.data / "items.csv")
    train, test = split_customers(list(baskets), held_out=args.held_out, seed=args.seed)
    train_baskets = [[b.items for b in baskets[c]] for c in train]
    popularity = basket_popularity([baskets[c] for c in train])
    protocols = {name: make_cases(baskets, test, popularity, n_candidates=args.candidates,
                                  new_items_only=new, seed=args.seed)
                 for name, new in (("all items", False), ("new items only", True))}
    print(f"{len(train)} train customers, {len(test)} held out, "
          + ", ".join(f"{len(c)} cases ({p})" for p, c in protocols.items()), flush=True)

    t = time.perf_counter()
    text = TextSimilarity.from_catalogue(args.base_model or default_base_model(), catalogue)
    embed_s = time.perf_counter() - t
    models: list[Recommender] = [Popularity(), BoughtBefore(), CoOccurrence(), *(Ease(lam) for lam in args.lam), text]
    try:
        models.append(VowpalWabbit(catalogue, popularity, seed=args.seed))
    except ImportError:
        print("vowpalwabbit is not installed: its row is left out (pip install vowpalwabbit)", flush=True)
    results: dict[str, list[Result]] = {p: [] for p in protocols}
    for model in models:
        name = f"{model.name} (λ={model.lam:g})" if isinstance(model, Ease) else model.name
        t = time.perf_counter()
        model.fit(train_baskets)
        fit_s = time.perf_counter() - t + (embed_s if model is text else 0.0)
        for protocol, cases in protocols.items():
            t = time.perf_counter()
            r = evaluate(name, per_case_ndcg(model, cases), seed=args.seed)
            results[protocol].append(Result(r.name, r.ndcg, r.low, r.high, r.cases, round(fit_s, 2),
                                            round(time.perf_counter() - t, 2)))
            print(f"{protocol:15s} {name:36s} NDCG@10 {r.ndcg:.3f} [{r.low:.3f}, {r.high:.3f}]  fit {fit_s:.1f}s",
                  flush=True)

    wall = time.perf_counter() - started
    command = ".venv/bin/python scripts/retail_baselines.py " + shlex.join(sys.argv[1:])
    report = {
        "data": "online-retail (purchases.csv, items.csv)",
        "protocol": {"held_out_share": args.held_out, "seed": args.seed, "candidates": args.candidates,
                     "negatives": "drawn without replacement in proportion to training basket counts, never a target item",
                     "target": "each held-out customer's last basket", "history": "items of the earlier baskets",
                     "metric": "NDCG@10, binary relevance; 95% percentile bootstrap over customers (1,000 resamples)"},
        "customers": {"train": len(train), "held_out": len(test),
                      "evaluated": {p: len(c) for p, c in protocols.items()}},
        "results": {p: [asdict(r) for r in rs] for p, rs in results.items()},
        "repeat_share": round(float(np.mean([len(c.relevant & set(c.history)) / len(c.relevant)
                                             for c in protocols["all items"]])), 3),
        "command": command, "wall_s": round(wall, 1),
        "vowpalwabbit": vw_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "baselines.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / "README.md").write_text(readme(report), encoding="utf-8")
    print(f"wrote {args.out}/baselines.json and README.md in {wall:.0f} s")


class VowpalWabbit:
    """Vowpal Wabbit's contextual bandit over action-dependent features, the engine Azure
    Personalizer ran on, as a baseline (optional: needs `pip install vowpalwabbit`).

    Features are hashed words: the customer's history item names in a shared namespace `u`, the
    candidate's name and id in `a`, crossed (`-q ua`).  It learns from logged bandit feedback made
    from the training customers' visits: for each later visit, `actions` candidates (its items plus
    popularity negatives), `draws` of them shown one at a time uniformly at random (probability 1/n),
    cost −1 when the customer bought it.  That is the data `cb_explore_adf` learns from; offline we
    score with the learner under it (`--cb_adf`, cost per action) greedily, since ordering a fixed
    candidate list needs no exploration."""

    name = "vowpal wabbit (cb_adf, hashed text)"

    def __init__(self, catalogue: dict[str, str], popularity: Mapping[str, int], *,
                 actions: int = 20, draws: int = 3, seed: int = 0) -> None:
        import vowpalwabbit

        self.words = {i: " ".join(re.findall(r"[a-z0-9]+", t.lower())) for i, t in catalogue.items()}
        self.popularity, self.actions, self.draws, self.seed = popularity, actions, draws, seed
        self.vw = vowpalwabbit.Workspace(f"--cb_adf -q ua -b 22 --random_seed {seed} --quiet")

    def _lines(self, history: Sequence[str], candidates: Sequence[str]) -> list[str]:
        shared = " ".join(self.words.get(h, "") for h in list(dict.fromkeys(history))[-50:])
        return [f"shared |u {shared}"] + [f"|a id_{c} {self.words.get(c, '')}" for c in candidates]

    def fit(self, customers: Sequence[Sequence[Sequence[str]]]) -> None:
        rng = np.random.default_rng(self.seed)
        pool = np.array(sorted(self.popularity))
        weights = np.array([self.popularity[i] for i in pool], dtype=np.float64)
        for baskets in customers:
            for v in range(1, len(baskets)):
                history = [i for b in baskets[:v] for i in b]
                target = list(baskets[v])[: self.actions // 2]
                p = weights * ~np.isin(pool, target)
                negatives = rng.choice(pool, size=self.actions - len(target), replace=False, p=p / p.sum()).tolist()
                candidates = target + negatives
                rng.shuffle(candidates)
                lines = self._lines(history, candidates)
                for shown in rng.choice(len(candidates), size=self.draws, replace=False):
                    cost = -1.0 if candidates[shown] in target else 0.0
                    labelled = list(lines)
                    labelled[1 + shown] = f"0:{cost}:{1.0 / len(candidates)} " + labelled[1 + shown]
                    self.vw.learn(labelled)

    def score(self, history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        return -np.array(self.vw.predict(self._lines(history, candidates)), dtype=np.float64)


def vw_version() -> str:
    """The installed vowpalwabbit's version, or that it is not installed (its row is then absent)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vowpalwabbit")
    except PackageNotFoundError:
        return "not installed"


def readme(report: dict) -> str:
    """The folder's README: what was measured, the split, the tables, the command."""
    c, p = report["customers"], report["protocol"]

    def table(protocol: str) -> str:
        rows = "\n".join(f"| {r['name']} | {r['ndcg']:.3f} | {r['low']:.3f} – {r['high']:.3f} | {r['fit_s']:.1f} |"
                         for r in report["results"][protocol])
        return f"| model | NDCG@10 | 95% interval | fit (s) |\n|---|---|---|---|\n{rows}"

    def best(protocol: str, prefix: str) -> str:
        return f"{max(r['ndcg'] for r in report['results'][protocol] if r['name'].startswith(prefix)):.3f}"

    evaluated = c["evaluated"]
    return f"""# Online Retail: the baselines a recommender must beat (issue 24)

Each held-out customer's **last basket**, ordered among {p['candidates']} candidates, scored by
NDCG@10. This is the offline ground for the recommendation kind of issue 24; nothing here is
learned from feedback yet.

- **Data**: `../shared/data/online-retail/` (UCI Online Retail, CC0): {c['train'] + c['held_out']:,}
  customers' baskets (one invoice = one basket), 3,665 items with their product names.
- **Split**: a seeded ({p['seed']}) {p['held_out_share']:.0%} of customers is kept aside
  ({c['held_out']:,}); every model is fit on the other {c['train']:,} customers' baskets only (none of
  a held-out customer's purchases is seen in training). Held-out customers with no earlier basket
  are skipped.
- **Case**: history = the items of the customer's earlier baskets; candidates = the items of the last
  basket plus negatives {p['negatives']}, up to {p['candidates']}, in a seeded shuffled order (ties keep it,
  so a model that cannot tell items apart scores like chance).
- **Two questions**: *all items* ({evaluated['all items']:,} customers) asks for the whole last basket,
  repeat purchases included ({report['repeat_share']:.0%} of a last basket's items were bought before, on average);
  *new items only* ({evaluated['new items only']:,} customers) takes the customer's earlier items out
  of the target and the negatives, so only items new to them count.
- **Metric**: {p['metric']}.
- **Models** (`app/tools/recommenders.py`): popularity (training baskets holding the item); bought
  before, then popularity; item-item co-occurrence (baskets holding both, summed over the history);
  EASE (Steck 2019, closed form over the binary customer × item matrix, for each λ; its diagonal is
  zero, so it never scores an item by itself); zero-shot text similarity (each candidate's best
  cosine to a history item's name, all-MiniLM-L6-v2 mean-pooled as Flywheel embeds label names; needs
  no purchases, and a repeat item scores 1); Vowpal Wabbit {report['vowpalwabbit']} (`VowpalWabbit` in
  the script: the contextual bandit over action-dependent features that Azure Personalizer ran on,
  hashed words of the history's and the candidate's names crossed, learnt from uniformly logged
  single-item feedback simulated from the training customers' later visits, 20 candidates and 3
  shown per visit; `--cb_adf`, the learner under `cb_explore_adf`, ordering greedily by its cost
  estimate, since ordering a fixed list offline needs no exploration).

## All items

{table("all items")}

## New items only

{table("new items only")}

## Against the figures quoted in issue 24

The issue quotes EASE 0.289 and zero-shot max-similarity 0.290 "on the split measured here",
without writing the split down. On *new items only* the best EASE reaches
{best("new items only", "ease")} and zero-shot {best("new items only", "zero-shot")}; the issue's
figures lie inside both intervals, so that is most likely the question they answered. On
*all items* repeat purchases lift zero-shot to {best("all items", "zero-shot")} (a repeat item is its
own best match), "bought before, then popularity" to {best("all items", "bought before")} and EASE to
{best("all items", "ease")}. The issue's target (1.2 × the best of EASE and zero-shot) should name
which of the two questions it means; both tables are the ground for it.

λ for EASE is reported at every value tried rather than tuned on a validation split, so its best
row is slightly optimistic. Wall time of the whole run: {report['wall_s']:.0f} s ({report['machine']}).

Command, from the project root:

    {report['command']}
"""


if __name__ == "__main__":
    main()
