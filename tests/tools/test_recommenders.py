"""The offline ground for recommendation (issue 24): the basket and catalogue readers, the
comparison recommenders and the held-out protocol, on tiny baskets made here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from app.tools.datasets import Basket, DataError, read_baskets, read_catalogue
from app.tools.offline_eval import (
    basket_popularity,
    bootstrap,
    evaluate,
    make_cases,
    ndcg_at,
    order_by,
    per_case_ndcg,
    split_customers,
)
from app.tools.recommenders import BoughtBefore, CoOccurrence, Ease, Popularity, TextSimilarity


def test_a_log_becomes_each_customers_baskets_in_time_order(tmp_path: Path) -> None:
    log = tmp_path / "purchases.csv"
    log.write_text("customer_id,invoice,item_id,time,quantity,country\n"
                   "c1,i2,b,2011-01-02 10:00:00,1,UK\n"
                   "c2,i3,a,2011-01-01 09:00:00,1,UK\n"
                   "c1,i1,a,2011-01-01 08:00:00,1,UK\n"
                   "c1,i2,c,2011-01-02 10:00:00,1,UK\n"
                   "c1,i2,b,2011-01-02 10:00:00,2,UK\n"
                   ",i4,a,2011-01-03 08:00:00,1,UK\n", encoding="utf-8")
    assert read_baskets(log) == {
        "c1": [Basket("i1", "2011-01-01 08:00:00", ("a",)), Basket("i2", "2011-01-02 10:00:00", ("b", "c"))],
        "c2": [Basket("i3", "2011-01-01 09:00:00", ("a",))],
    }
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,item_id\nc1,a\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing invoice, time"):
        read_baskets(bad)


def test_a_catalogue_maps_ids_to_texts_and_skips_blank_rows(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("item_id,text\na, RED CUP \nb,\n,GREEN CUP\nc,\"PLATE, BLUE\"\n", encoding="utf-8")
    assert read_catalogue(path) == {"a": "RED CUP", "c": "PLATE, BLUE"}


# Four customers: "cup" and "saucer" always go together; "spoon" is the most bought item.
TRAIN = [[["cup", "saucer"], ["spoon"]], [["cup", "saucer", "spoon"]], [["spoon", "fork"]], [["spoon"], ["cup", "saucer"]]]


def test_popularity_orders_by_the_baskets_that_hold_an_item() -> None:
    model = Popularity()
    model.fit(TRAIN)
    scores = model.score(["fork"], ["fork", "cup", "spoon", "never-seen"])
    assert order_by(scores, ["fork", "cup", "spoon", "never-seen"]) == ["spoon", "cup", "fork", "never-seen"]
    assert scores.tolist() == [1.0, 3.0, 4.0, 0.0]


def test_bought_before_puts_the_customers_own_items_first() -> None:
    model = BoughtBefore()
    model.fit(TRAIN)
    assert order_by(model.score(["fork"], ["cup", "spoon", "fork"]), ["cup", "spoon", "fork"]) == ["fork", "spoon", "cup"]


@pytest.mark.parametrize("model", [Ease(lam=1.0), CoOccurrence()], ids=["ease", "co-occurrence"])
def test_a_co_purchase_is_recovered(model: Ease | CoOccurrence) -> None:
    model.fit(TRAIN)
    candidates = ["fork", "saucer", "spoon"]
    assert order_by(model.score(["cup"], candidates), candidates)[0] == "saucer"
    assert model.score([], candidates).tolist() == [0.0, 0.0, 0.0]
    assert model.score(["cup"], ["never-seen"]).tolist() == [0.0]


def test_ease_has_a_zero_diagonal_and_matches_the_closed_form() -> None:
    model = Ease(lam=2.0)
    model.fit(TRAIN)
    x = np.zeros((len(TRAIN), len(model.index)))
    for u, baskets in enumerate(TRAIN):
        for basket in baskets:
            for item in basket:
                x[u, model.index[item]] = 1.0
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(len(model.index)))
    expected = np.eye(len(model.index)) - p @ np.diag(1.0 / np.diag(p))
    assert np.allclose(model.weights, expected)
    assert np.allclose(np.diag(model.weights), 0.0)


def test_ndcg_at_10_of_a_perfect_and_a_reversed_order() -> None:
    relevant = frozenset({"a", "b"})
    order = ["a", "b"] + [f"n{i}" for i in range(18)]
    assert ndcg_at(order, relevant) == pytest.approx(1.0)
    assert ndcg_at(order[::-1], relevant) == 0.0  # both relevant items fall beyond the tenth place
    one_late = ["n0", "a"] + [f"n{i}" for i in range(1, 12)]
    assert ndcg_at(one_late, frozenset({"a"})) == pytest.approx(1.0 / math.log2(3))
    assert ndcg_at(order, frozenset()) == 0.0


def test_the_split_is_deterministic_and_keeps_customers_apart() -> None:
    customers = [f"c{i}" for i in range(50)]
    train, test = split_customers(customers, held_out=0.2, seed=3)
    assert len(test) == 10 and not set(train) & set(test) and set(train) | set(test) == set(customers)
    assert split_customers(customers[::-1], held_out=0.2, seed=3) == (train, test)
    assert split_customers(customers, held_out=0.2, seed=4)[1] != test


def _shop() -> dict[str, list[Basket]]:
    items = [f"item{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    return {f"c{u}": [Basket(f"{u}-{v}", f"2011-01-0{v + 1}", tuple(rng.choice(items, size=4, replace=False)))
                      for v in range(1 + u % 3)] for u in range(40)}


def test_cases_hold_the_last_basket_among_popular_negatives_and_repeat_for_a_seed() -> None:
    baskets = _shop()
    train, test = split_customers(list(baskets), seed=0)
    popularity = basket_popularity([baskets[c] for c in train])
    cases = make_cases(baskets, test, popularity, n_candidates=12, seed=0)
    assert [c.customer for c in cases] == [c for c in test if len(baskets[c]) > 1]
    for case in cases:
        visits = baskets[case.customer]
        assert case.relevant == frozenset(visits[-1].items)
        assert set(case.history) == {i for b in visits[:-1] for i in b.items}
        assert len(case.candidates) == 12 == len(set(case.candidates)) and case.relevant <= set(case.candidates)
        assert all(popularity[c] > 0 for c in set(case.candidates) - case.relevant)
    assert make_cases(baskets, test, popularity, n_candidates=12, seed=0) == cases
    new = make_cases(baskets, test, popularity, n_candidates=12, new_items_only=True, seed=0)
    assert all(not set(c.history) & set(c.candidates) for c in new)


def test_an_oracle_scores_one_and_the_interval_holds_the_mean() -> None:
    baskets = _shop()
    train, test = split_customers(list(baskets), seed=0)
    cases = make_cases(baskets, test, basket_popularity([baskets[c] for c in train]), n_candidates=12, seed=0)

    class Oracle:
        """Knows every case's answer: scores an item 1 when the case whose candidates these are holds it."""

        name = "oracle"
        answers = {c.candidates: c.relevant for c in cases}

        def fit(self, customers: object) -> None: ...

        def score(self, history: object, candidates: tuple[str, ...]) -> np.ndarray:
            return np.array([float(c in self.answers[candidates]) for c in candidates])

    assert cases and per_case_ndcg(Oracle(), cases) == [1.0] * len(cases)  # type: ignore[arg-type]
    result = evaluate("x", [0.0, 1.0, 0.5, 0.25] * 10, seed=0)
    assert result.low < result.ndcg < result.high and result.cases == 40
    assert bootstrap([0.2] * 5) == pytest.approx((0.2, 0.2))


def test_zero_shot_similarity_ranks_a_same_text_item_first(tiny_model_dir: Path) -> None:
    catalogue = {"h": "lost card", "same": "lost card", "other": "sunny weather tomorrow", "third": "refund fee"}
    model = TextSimilarity.from_catalogue(str(tiny_model_dir), catalogue)
    assert np.allclose(np.linalg.norm(model.embeddings, axis=1), 1.0)
    candidates = ["other", "same", "third", "unknown"]
    scores = model.score(["h", "unknown-history"], candidates)
    assert scores[1] == pytest.approx(1.0, abs=1e-5) and scores[3] == 0.0
    assert order_by(scores, candidates)[0] == "same"
    assert model.score([], candidates).tolist() == [0.0] * 4
