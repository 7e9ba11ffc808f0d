"""The offline protocol that recommenders are compared on (issue 24): held-out customers' last
basket ranked among 100 candidates, NDCG@10, with a bootstrap interval over customers.

- `split_customers`: a seeded share of customers (20 %) is kept aside; the rest train.
- `make_cases`: for each held-out customer with at least two baskets, the last basket is the
  target, the history is every item of the earlier baskets, and the candidates are the target's
  items plus negatives drawn without replacement in proportion to training popularity (never a
  target item) up to `n_candidates`, in a seeded shuffled order so ties cannot favour the target.
- `evaluate`: NDCG@10 with binary relevance (a candidate is relevant if it is in the target), per
  case, then the mean and a percentile bootstrap interval over customers.

Everything is deterministic for a seed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from app.tools.datasets import Basket
from app.tools.recommenders import Recommender


@dataclass(frozen=True)
class Case:
    """One held-out customer: what they bought before, the candidates to order, and which are relevant."""

    customer: str
    history: tuple[str, ...]
    candidates: tuple[str, ...]
    relevant: frozenset[str]


@dataclass(frozen=True)
class Result:
    """A recommender's mean NDCG@k over the cases and its bootstrap interval."""

    name: str
    ndcg: float
    low: float
    high: float
    cases: int
    fit_s: float = 0.0
    score_s: float = 0.0


def split_customers(customers: Sequence[str], *, held_out: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, test): a seeded random `held_out` share of the customers is test; no customer is in
    both; the result depends only on the set of customers and the seed, not on their order."""
    ordered = sorted(set(customers))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ordered))
    n_test = round(len(ordered) * held_out)
    test = {ordered[i] for i in order[:n_test]}
    return [c for c in ordered if c not in test], [c for c in ordered if c in test]


def basket_popularity(customers: Sequence[Sequence[Basket]]) -> Counter[str]:
    """How many baskets hold each item."""
    return Counter(item for baskets in customers for b in baskets for item in b.items)


def make_cases(baskets: Mapping[str, Sequence[Basket]], test: Sequence[str], popularity: Mapping[str, int], *,
               n_candidates: int = 100, new_items_only: bool = False, seed: int = 0) -> list[Case]:
    """One case per test customer with an earlier basket (others are skipped), in `test` order.

    With `new_items_only` the items the customer bought before are taken out of the target and
    the negatives (a customer whose last basket is all repeats is skipped): the question becomes
    "what will they buy that they never bought", which repeat purchases cannot answer."""
    rng = np.random.default_rng(seed)
    pool = np.array(sorted(popularity))
    weights = np.array([popularity[i] for i in pool], dtype=np.float64)
    cases = []
    for customer in test:
        visits = baskets[customer]
        if len(visits) < 2:
            continue
        history = tuple(dict.fromkeys(i for b in visits[:-1] for i in b.items))
        target = tuple(i for i in visits[-1].items if not (new_items_only and i in history))
        if not target:
            continue
        wanted = max(0, n_candidates - len(target))
        allowed = ~np.isin(pool, list(target) + (list(history) if new_items_only else []))
        p = weights * allowed
        take = min(wanted, int(np.count_nonzero(p)))
        negatives = rng.choice(pool, size=take, replace=False, p=p / p.sum()).tolist() if take else []
        candidates = list(target) + negatives
        rng.shuffle(candidates)
        cases.append(Case(customer, history, tuple(candidates), frozenset(target)))
    return cases


def ndcg_at(order: Sequence[str], relevant: frozenset[str], k: int = 10) -> float:
    """NDCG@k with binary relevance: Σ rel_i / log2(i + 2) over the first k, over its best value."""
    dcg = sum(1.0 / math.log2(i + 2) for i, item in enumerate(order[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def order_by(scores: np.ndarray, candidates: Sequence[str]) -> list[str]:
    """Candidates by score, highest first; ties keep the (shuffled) candidate order."""
    return [candidates[i] for i in np.argsort(-scores, kind="stable")]


def bootstrap(values: Sequence[float], *, samples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval for the mean, resampling the values (one per customer)."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(samples, len(v)))].mean(axis=1)
    tail = (1.0 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def per_case_ndcg(model: Recommender, cases: Sequence[Case], *, k: int = 10) -> list[float]:
    """NDCG@k of the model's order for each case."""
    return [ndcg_at(order_by(model.score(c.history, c.candidates), c.candidates), c.relevant, k) for c in cases]


def evaluate(name: str, values: Sequence[float], *, seed: int = 0) -> Result:
    """The mean of per-customer values with its 95 % bootstrap interval."""
    low, high = bootstrap(values, seed=seed)
    return Result(name, float(np.mean(values)), low, high, len(values))
