"""How noisy each client's ±1 is: the probability ρ that its signal is flipped (says "right" when
the shown answer was wrong, or "wrong" when it was right), estimated from plain rows with a 90 %
interval.  No database here; `app/services/noise.py` gathers the rows.

Every vote a client gave (its latest ±1 on a text, or on one part of an answer with parts) is compared
with the best reference the data has for "was the shown answer right", and each reference has its
own chance e of being wrong itself:

- known (e = 0): a labelled example of the same text, a correction from the admin or the review
  queue (client None), or the vote of a key an admin marked trusted;
- anchor (e = 1 − p): an answer the model was almost sure of, p(shown) >= ANCHOR_PROPENSITY, with
  no known truth.  The model is taken at its word that the answer is right, and its residual error
  is kept in the likelihood rather than ignored (the anchor-point idea of Patrini et al. 2017);
- peers (e = P(the majority is wrong)): the majority of the other untrusted clients' votes on the
  same answer, a noisy reference corrected for the pooled flip rate: with m others each flipping
  with the pooled rate, the majority is wrong with the binomial tail beyond m/2.  This keeps peers
  as evidence in proportion to how good a reference they are (two peers at a 30 % pooled rate say
  little, nine say a lot) rather than a fixed discount.  It assumes the others' flips are
  independent; colluding hostile keys would fool it, which is why known rows and anchors come first.

A vote counts once, against the reference with the smallest e.  Then the chance the client's vote
disagrees with its reference is

    P(disagree) = ρ + (1 − 2ρ)·e

(it flips and the reference is right, or it does not and the reference is wrong).  The posterior of
ρ under a Beta prior centred on the pooled rate, with PRIOR_STRENGTH pseudo-votes, is computed on
a grid (no conjugacy to lean on once e > 0); a client with few votes stays near the pooled rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.learning.dataset import ExampleLike, FeedbackLike, Same
from app.core.texts import text_hash

# An answer the model gave at least this probability is an anchor: with a calibrated model it is
# wrong at most 5 % of the time, so a −1 there is nearly always a flip (and the 5 % is corrected
# for, row by row, as e = 1 − p).  Lower would let the model's own mistakes dominate the evidence
# and lean harder on its calibration; higher would leave too few anchors on a young model.
ANCHOR_PROPENSITY = 0.95
# Pseudo-votes of the prior centred on the pooled rate: a client needs about this many votes of
# its own before its estimate is more its own than the crowd's.
PRIOR_STRENGTH = 10.0
# The share of the prior that is flat: a client whose own votes clearly set it apart from the crowd
# (an honest key at 0 %, a hostile one at 100 %) is not held to the crowd's rate, while one with
# a handful of votes still is.  A plain Beta prior would keep a 0 % client's interval off 0.
ROBUST_SHARE = 0.1
INTERVAL = 0.90  # the posterior mass in each estimate's interval (highest density)
# "careless" needs an interval that covers ½ and is at most this wide: the data rule out both an
# honest client (ρ ≲ 0.35) and a hostile one (ρ ≳ 0.65), so it answers at random.
CARELESS_MAX_WIDTH = 0.3
GRID = 2000  # cells of [0, 1] the posterior is computed on
POOLED_ROUNDS = 5  # fixed-point rounds of the pooled rate (the peers' reference error depends on it)

@dataclass(frozen=True)
class Estimate:
    """ρ's posterior mean and 90 % interval, and how many votes of each kind of evidence it saw."""

    rate: float
    low: float
    high: float
    evidence: dict[str, int]
    trusted: bool = False

    @property
    def adversarial(self) -> bool:
        """Flips more often than not, surely: says the opposite on purpose."""
        return self.low > 0.5

    @property
    def careless(self) -> bool:
        """Could be answering at random, and the evidence is enough to rule out honest and hostile."""
        return self.low <= 0.5 <= self.high and self.high - self.low <= CARELESS_MAX_WIDTH

    def to_json(self) -> dict[str, Any]:
        return {"rate": round(self.rate, 4), "low": round(self.low, 4), "high": round(self.high, 4),
                "evidence": dict(self.evidence), "trusted": self.trusted, "adversarial": self.adversarial,
                "careless": self.careless}


@dataclass(frozen=True)
class NoiseReport:
    pooled: Estimate  # every untrusted client's votes together, under a flat prior
    clients: dict[int, Estimate] = field(default_factory=dict)

    def flip_rates(self) -> dict[int | None, float]:
        """Each client's estimated flip rate (its posterior mean); trusted keys and the admin
        (client None) flip nothing.  With no evidence about anyone (no known truth, no anchor, no
        shared text: ±1 on a kind whose answers are never near-certain) the posterior is only
        the flat prior's ½, which would make every signal worthless; noise is then not assumed:
        every rate is 0, as a weight is lowered only on evidence."""
        if not any(self.pooled.evidence.values()):
            return {None: 0.0, **{c: 0.0 for c in self.clients}}
        rates: dict[int | None, float] = {c: (0.0 if e.trusted else e.rate) for c, e in self.clients.items()}
        rates[None] = 0.0
        return rates

    def adversarial(self) -> set[int]:
        """Clients that surely flip more often than not: their words are left out of training and the gate."""
        return {c for c, e in self.clients.items() if e.adversarial and not e.trusted}

    def to_json(self) -> dict[str, Any]:
        return {"pooled": self.pooled.to_json(),
                "clients": {str(c): e.to_json() for c, e in sorted(self.clients.items())}}


# ---------------------------------------------------------------- votes and references


@dataclass(frozen=True)
class _Vote:
    client: int | None
    key: tuple[str, int | None]  # (text hash, part of the answer or None)
    shown: str
    right: bool  # +1: the shown answer was right
    propensity: float | None
    claim: str  # is | not: what the vote says of `label`
    label: str
    order: int


def _says(vote: _Vote, shown: str, same: Same) -> bool | None:
    """What `vote` says of `shown` being right for its text: True, False, or nothing."""
    if vote.claim == "is":
        return same(vote.label, shown)
    return False if same(vote.label, shown) else None


def _votes(feedback: Iterable[FeedbackLike]) -> list[_Vote]:
    """Each client's latest word on each text (each part of an answer with parts)."""
    latest: dict[tuple[str, int | None, int | None], _Vote] = {}
    for fb in sorted(feedback, key=lambda f: f.id):
        key = (text_hash(fb.text), getattr(fb, "span", None))
        if fb.correction is not None:
            claim, label = "is", fb.correction
        else:
            claim, label = ("is" if fb.signal > 0 else "not"), fb.shown
        latest[(key[0], key[1], fb.client_id)] = _Vote(fb.client_id, key, fb.shown, fb.signal > 0,
                                                        getattr(fb, "propensity", None), claim, label, fb.id)
    return list(latest.values())


def _majority_wrong(m: int, rho: float) -> float:
    """P(more than half of m independent votes flipped | no tie), each flipping with `rho`."""
    pmf = [math.comb(m, k) * rho ** k * (1 - rho) ** (m - k) for k in range(m + 1)]
    tie = pmf[m // 2] if m % 2 == 0 else 0.0
    wrong = sum(pmf[k] for k in range(m // 2 + 1, m + 1))
    return wrong / (1.0 - tie) if tie < 1.0 else 0.5


@dataclass
class _Evidence:
    """One client's votes as (reference error e, disagreed) pairs, by kind of evidence."""

    pairs: list[tuple[float, bool]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"known": 0, "anchors": 0, "peers": 0})

    def add(self, kind: str, e: float, disagree: bool) -> None:
        self.pairs.append((e, disagree))
        self.counts[kind] += 1


def _evidence(votes: Sequence[_Vote], gold: Mapping[str, str], trusted: set[int | None], same: Same,
              pooled: float | None) -> dict[int, _Evidence]:
    """Each untrusted-or-trusted client's votes against their best reference.  `pooled` None:
    peers are not used (their reference error needs the pooled rate)."""
    by_key: dict[tuple[str, int | None], list[_Vote]] = {}
    for v in votes:
        by_key.setdefault(v.key, []).append(v)
    out: dict[int, _Evidence] = {}
    for key, group in by_key.items():
        for v in group:
            if v.client is None:
                continue  # the admin's word is the reference, not a client to estimate
            refs: list[tuple[str, float, bool]] = []  # (kind, e, the shown answer is right)
            opinions = [(o.order, _says(o, v.shown, same)) for o in group
                        if (o.client is None or o.client in trusted) and o.client != v.client]
            known = [(order, says) for order, says in opinions if says is not None]
            if known:
                refs.append(("known", 0.0, max(known)[1]))
            elif key[1] is None and key[0] in gold:  # a whole-answer label says nothing of one part
                refs.append(("known", 0.0, same(gold[key[0]], v.shown)))
            if v.propensity is not None and v.propensity >= ANCHOR_PROPENSITY:
                refs.append(("anchors", 1.0 - v.propensity, True))
            if pooled is not None:
                said = [_says(o, v.shown, same) for o in group
                        if o.client is not None and o.client not in trusted and o.client != v.client]
                peers = [p for p in said if p is not None]
                yes = sum(peers)
                if peers and 2 * yes != len(peers):
                    refs.append(("peers", _majority_wrong(len(peers), pooled), 2 * yes > len(peers)))
            if refs:
                kind, e, right = min(refs, key=lambda r: r[1])
                out.setdefault(v.client, _Evidence()).add(kind, e, v.right != right)
    return out


# ---------------------------------------------------------------- the posterior on a grid

_RHO = (np.arange(GRID) + 0.5) / GRID  # cell midpoints


def _log_likelihood(pairs: Sequence[tuple[float, bool]]) -> np.ndarray:
    """Σ log P(vote | ρ) over the grid, votes bucketed by (e to 1e-4, disagreed)."""
    buckets: dict[tuple[float, bool], int] = {}
    for e, d in pairs:
        k = (round(min(max(e, 0.0), 0.5), 4), d)
        buckets[k] = buckets.get(k, 0) + 1
    ll = np.zeros(GRID)
    for (e, d), n in buckets.items():
        q = _RHO + (1.0 - 2.0 * _RHO) * e
        ll += n * np.log(q if d else 1.0 - q)
    return ll


def _summarise(log_post: np.ndarray, counts: Mapping[str, int], trusted: bool = False) -> Estimate:
    """Posterior mean and highest-density interval (cell edges, so a mode at 0 or 1 is inside)."""
    w = np.exp(log_post - log_post.max())
    w /= w.sum()
    order = np.argsort(-w, kind="stable")
    inside = order[: int(np.searchsorted(np.cumsum(w[order]), INTERVAL)) + 1]
    low, high = inside.min() / GRID, (inside.max() + 1) / GRID
    return Estimate(float((w * _RHO).sum()), float(low), float(high), dict(counts), trusted)


def _log_prior(centre: float) -> np.ndarray:
    """log of (1 − ROBUST_SHARE)·Beta(κ·c, κ·(1 − c)) + ROBUST_SHARE·Uniform on the grid, c the pooled rate."""
    c = min(max(centre, 0.01), 0.99)
    a, b = PRIOR_STRENGTH * c, PRIOR_STRENGTH * (1.0 - c)
    log_beta = ((a - 1.0) * np.log(_RHO) + (b - 1.0) * np.log(1.0 - _RHO)
                + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))
    return np.logaddexp(math.log(1.0 - ROBUST_SHARE) + log_beta, math.log(ROBUST_SHARE))


def _pooled(evidence: Mapping[int, _Evidence], trusted: set[int | None]) -> Estimate:
    pairs = [p for c, ev in evidence.items() if c not in trusted for p in ev.pairs]
    counts = {"known": 0, "anchors": 0, "peers": 0}
    for c, ev in evidence.items():
        if c not in trusted:
            for k, n in ev.counts.items():
                counts[k] += n
    return _summarise(_log_likelihood(pairs), counts)  # flat prior


def estimate_noise(*, feedback: Iterable[FeedbackLike], examples: Iterable[ExampleLike] = (),
                   trusted: Iterable[int] = (), same: Same | None = None) -> NoiseReport:
    """Every client's flip rate, shrunk toward the pooled rate of the untrusted clients.

    `feedback`: the task's signals with the shown answer and its propensity (a signal about one
    part of an answer with parts carries `span`, and `shown` is that part's label); `examples`: its
    labelled texts; `trusted`: the keys an admin marked trusted (their votes are known truth for
    everyone else, and are judged themselves against the rest); `same`: the task kind's "do two
    stored labels say the same".
    """
    same = same or (lambda a, b: a == b)
    trusted_ids: set[int | None] = set(trusted)
    votes = _votes(feedback)
    gold = {text_hash(ex.text): ex.label for ex in examples}
    evidence = _evidence(votes, gold, trusted_ids, same, None)
    pooled = _pooled(evidence, trusted_ids)
    if not any(ev.pairs for c, ev in evidence.items() if c not in trusted_ids):
        pooled = Estimate(0.1, pooled.low, pooled.high, pooled.evidence)  # no evidence: a modest start for peers
    for _ in range(POOLED_ROUNDS):  # the peers' reference error depends on the pooled rate, and it on them
        evidence = _evidence(votes, gold, trusted_ids, same, pooled.rate)
        pooled = _pooled(evidence, trusted_ids)
    log_prior = _log_prior(pooled.rate)
    clients = {v.client for v in votes if v.client is not None}
    out: dict[int, Estimate] = {}
    for c in clients:
        ev = evidence.get(c, _Evidence())
        out[c] = _summarise(log_prior + _log_likelihood(ev.pairs), ev.counts, c in trusted_ids)
    return NoiseReport(pooled=pooled, clients=out)
