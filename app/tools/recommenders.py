"""Comparison recommenders for offline evaluation: the baselines a learned recommender must beat.

Each is fit on training customers' baskets and then scores candidate items for one customer's
history (the items of their earlier baskets); a higher score means "recommend first".

- `Popularity`: how many training baskets hold the item; the same order for everyone.
- `BoughtBefore`: the customer's own earlier items first, then popularity (repeat purchases).
- `CoOccurrence`: how often the candidate was bought in one basket with each history item, summed.
- `Ease`: Steck's EASE (WWW 2019), a linear item-item model in closed form over the customer x item
  matrix X: P = (XᵀX + λI)⁻¹, B = I − P·diag(1/diag(P)) (so diag(B) = 0), score = x_u·B.
- `TextSimilarity`: zero-shot, no purchases needed: the candidate's best cosine to any history item,
  with texts embedded by the base encoder the way label names are embedded for zero-shot starts
  (mean-pooled `EncoderWithHead.embed_texts`).

Items never seen in training score 0 in the purchase-based models.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol, Sequence

import numpy as np
import torch
from torch import nn

from app.model.encoder import EncoderWithHead, load_base

History = Sequence[str]
Baskets = Sequence[Sequence[str]]


class Recommender(Protocol):
    """Fit once on training customers (each a list of baskets), then score candidates per history."""

    name: str

    def fit(self, customers: Sequence[Baskets]) -> None: ...

    def score(self, history: History, candidates: Sequence[str]) -> np.ndarray: ...


class _Indexed:
    """An item vocabulary built from the training baskets: id -> row."""

    index: dict[str, int]

    def _build_index(self, customers: Sequence[Baskets]) -> None:
        self.index = {}
        for baskets in customers:
            for basket in baskets:
                for item in basket:
                    self.index.setdefault(item, len(self.index))

    def _rows(self, items: Sequence[str]) -> np.ndarray:
        return np.array([self.index[i] for i in dict.fromkeys(items) if i in self.index], dtype=np.int64)


class Popularity:
    """The number of training baskets that hold the item."""

    name = "popularity"

    def fit(self, customers: Sequence[Baskets]) -> None:
        self.counts: Counter[str] = Counter(item for baskets in customers for basket in baskets
                                            for item in dict.fromkeys(basket))

    def score(self, history: History, candidates: Sequence[str]) -> np.ndarray:
        return np.array([self.counts.get(c, 0) for c in candidates], dtype=np.float64)


class BoughtBefore(Popularity):
    """Repeat purchases first: an item in the history outranks every other, popularity orders the
    rest (and the history items among themselves)."""

    name = "bought before, then popularity"

    def score(self, history: History, candidates: Sequence[str]) -> np.ndarray:
        seen = set(history)
        top = 1.0 + max(self.counts.values(), default=0)
        return np.array([self.counts.get(c, 0) + (top if c in seen else 0.0) for c in candidates], dtype=np.float64)


class CoOccurrence(_Indexed):
    """Item-item co-occurrence: C[i, j] = training baskets holding both i and j (i ≠ j); a
    candidate's score is Σ over distinct history items h of C[h, candidate]."""

    name = "co-occurrence"

    def fit(self, customers: Sequence[Baskets]) -> None:
        self._build_index(customers)
        n = len(self.index)
        counts = np.zeros((n, n), dtype=np.float32)
        for baskets in customers:
            for basket in baskets:
                rows = self._rows(basket)
                counts[np.ix_(rows, rows)] += 1.0
        np.fill_diagonal(counts, 0.0)
        self.counts = counts

    def score(self, history: History, candidates: Sequence[str]) -> np.ndarray:
        rows = self._rows(history)
        total = self.counts[rows].sum(axis=0) if len(rows) else np.zeros(len(self.index), dtype=np.float32)
        return np.array([total[self.index[c]] if c in self.index else 0.0 for c in candidates], dtype=np.float64)


class Ease(_Indexed):
    """EASE with L2 weight `lam` (Steck 2019), fit on binary customer x item rows (an item bought
    in any of the customer's baskets is 1)."""

    name = "ease"

    def __init__(self, lam: float = 250.0) -> None:
        self.lam = lam

    def fit(self, customers: Sequence[Baskets]) -> None:
        self._build_index(customers)
        x = np.zeros((len(customers), len(self.index)), dtype=np.float64)
        for u, baskets in enumerate(customers):
            x[u, self._rows([i for b in baskets for i in b])] = 1.0
        gram = x.T @ x
        gram[np.diag_indices_from(gram)] += self.lam
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)  # column j divided by P[j, j]: B = I − P·diag(1/diag(P)) off the diagonal
        np.fill_diagonal(b, 0.0)
        self.weights = b

    def score(self, history: History, candidates: Sequence[str]) -> np.ndarray:
        rows = self._rows(history)
        total = self.weights[rows].sum(axis=0) if len(rows) else np.zeros(len(self.index))
        return np.array([total[self.index[c]] if c in self.index else 0.0 for c in candidates], dtype=np.float64)


@torch.no_grad()
def embed_items(base_model: str, texts: Sequence[str], *, batch_size: int = 256, max_len: int = 64) -> np.ndarray:
    """Unit-length embeddings of item texts (N, H) from the base encoder, mean-pooled exactly as
    zero-shot label names are (`EncoderWithHead.embed_texts`; the head is unused here)."""
    encoder, tokenizer = load_base(base_model)
    model = EncoderWithHead(encoder, nn.Identity())
    model.eval()
    parts = [model.embed_texts(tokenizer, texts[i:i + batch_size], max_len=max_len)
             for i in range(0, len(texts), batch_size)]
    emb = torch.nn.functional.normalize(torch.cat(parts), dim=-1)
    return emb.cpu().numpy().astype(np.float64)


class TextSimilarity:
    """Zero-shot: a candidate's score is max over history items of cos(text(candidate), text(h));
    needs no purchases (fit is a no-op).  Items without a text score 0 / are left out of history."""

    name = "zero-shot text similarity"

    def __init__(self, item_ids: Sequence[str], embeddings: np.ndarray) -> None:
        self.index = {item: n for n, item in enumerate(item_ids)}
        self.embeddings = embeddings

    @classmethod
    def from_catalogue(cls, base_model: str, catalogue: dict[str, str]) -> TextSimilarity:
        ids = list(catalogue)
        return cls(ids, embed_items(base_model, [catalogue[i] for i in ids]))

    def fit(self, customers: Sequence[Baskets]) -> None:
        """Nothing to learn: the texts alone decide."""

    def score(self, history: History, candidates: Sequence[str]) -> np.ndarray:
        hist = [self.index[h] for h in dict.fromkeys(history) if h in self.index]
        out = np.zeros(len(candidates), dtype=np.float64)
        known = [n for n, c in enumerate(candidates) if c in self.index]
        if not hist or not known:
            return out
        cand = self.embeddings[[self.index[candidates[n]] for n in known]]
        out[known] = (cand @ self.embeddings[hist].T).max(axis=1)
        return out
