"""The validation gate: nothing is promoted on faith, and nothing on a lucky draw.

Candidate and active answer the same validation rows: labelled validation examples and
corrections, and a held-out slice of feedback.  Each row's outcome is scored honestly by the
task kind (`TaskKind.outcome`): a labelled row is right or wrong; a +1'd answer is right, so
keeping it is right and changing it is wrong; a −1'd answer is wrong, so keeping it is wrong,
but changing it is *unknown* (the new answer may be right or wrong).  Per row, the candidate's
advantage d = right(candidate) − right(active) is then known, or only bounded: an unknown
outcome is counted as wrong for the candidate and right for the active in the pessimistic
bound (d_lo), and the other way round in the optimistic one (d_hi).  Two models giving the
same answer tie, whatever the truth.

The decision is a one-sided paired test on those rows, by bootstrap over rows (each row
weighted as in training, so one client's cap holds here too) at `confidence`:
  promote       the lower bound of mean(d_est) is ≥ −tolerance: not worse beyond the tolerance;
  reject        the upper bound of mean(d_est) is < −tolerance: worse; or a class's recall
                (classes with ≥ MIN_RECALL_SUPPORT validation examples) fell by more than
                `max_recall_drop`;
  inconclusive  neither (or fewer than `min_rows` rows with a known outcome): keep collecting.
With no validation rows at all there is nothing to compare, and the candidate is not promoted.

Noisy feedback: a held-out signal from a client whose estimated flip rate ρ is above 0
(`Item.flip`, from `app/learning/noise.py`) is read through its flips, by the unbiased estimator
in `advantage_rows`, so a candidate that fixes answers a noisy crowd mislabelled is not charged
for disagreeing with the noise (before, under 30 % flips, every better candidate looked worse).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch

from app.kinds.base import TaskKind
from app.learning.dataset import Item
from app.model.encoder import encode_texts, tokenize

EPS = 1e-9
MIN_RECALL_SUPPORT = 10  # a recall on fewer validation examples is too noisy to veto a promotion
BOOTSTRAP_SAMPLES = 2000
MAX_LOOKS = 3  # how many times one candidate is judged: its own run, then up to two second looks
MAX_FLIP = 0.45  # the unbiased reading of a noisy signal divides by 1 − 2ρ: nearer ½ it says next to nothing


@torch.inference_mode()
def model_outputs(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, device: torch.device, max_len: int,
    batch_size: int = 64,
) -> list[torch.Tensor]:
    """The head's output row per text (CPU, float32), batched by length, in the order given; a
    token-level head's row is (tokens of that text, tags), its padding cut off."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[torch.Tensor | None] = [None] * len(texts)
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        batch = tokenize(tokenizer, [texts[i] for i in idx], max_len, device)
        rows = model(**batch).float().cpu()
        lengths = batch["attention_mask"].sum(-1).tolist()
        for i, row, n in zip(idx, rows, lengths):
            out[i] = row[:n] if row.dim() == 2 else row
    model.train(was_training)
    return out  # type: ignore[return-value]


def _offsets_if_needed(kind: TaskKind, tokenizer: Any, texts: Sequence[str], max_len: int) -> list[Any]:
    """Each text's tokens and offsets, for a token-level kind only (the others read pooled rows)."""
    return encode_texts(tokenizer, texts, max_len, offsets=True) if kind.token_level else []


def predict_targets(kind: TaskKind, model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *,
                    device: torch.device, max_len: int) -> list[Any]:
    """The kind's answer per text, as targets comparable with `Item.label`."""
    if not texts:
        return []
    rows = model_outputs(model, tokenizer, texts, device=device, max_len=max_len)
    return kind.predicted_targets(rows, _offsets_if_needed(kind, tokenizer, texts, max_len))


@dataclass
class Evaluation:
    """One model on the validation rows: its answer per row (as targets), the kind's metrics, and
    how sure the model is that each answer is right given what the row says (None: not known).
    For a row from a client that flips signals, `flipped` is that confidence had the signal been
    the opposite (None where the row is clean)."""

    predicted: list[Any]
    metrics: dict[str, Any]
    confidence: list[float] | None = None
    flipped: list[float | None] | None = None


def evaluate(
    kind: TaskKind, model: torch.nn.Module, tokenizer: Any, items: Sequence[Item], labels: Sequence[str], *,
    device: torch.device, max_len: int,
) -> Evaluation:
    """Answers and gate metrics of one model on the validation rows (`score` None when there are none)."""
    if not items:
        return Evaluation([], kind.gate_metrics(items, [], labels), [])
    texts = [it.text for it in items]
    rows = model_outputs(model, tokenizer, texts, device=device, max_len=max_len)
    pred = kind.predicted_targets(rows, _offsets_if_needed(kind, tokenizer, texts, max_len))
    confidence = [kind.confidence(it, row, p) for it, row, p in zip(items, rows, pred)]
    flipped = [kind.confidence(replace(it, signal=-it.signal), row, p) if it.signal != 0 and it.flip > 0 else None
               for it, row, p in zip(items, rows, pred)]
    return Evaluation(pred, kind.gate_metrics(items, pred, labels), confidence, flipped)


# ---------------------------------------------------------------- the paired comparison


@dataclass
class Comparison:
    """Candidate − active on the same rows: bounds on the mean advantage and their confidence bounds."""

    rows: int
    known: int  # rows whose advantage is known exactly (both outcomes known, or the same answer)
    mean_lo: float  # pessimistic: unknowns against the candidate
    mean_hi: float  # optimistic: unknowns for the candidate
    mean_est: float  # unknowns estimated (each model's calibrated confidence), the decision's statistic
    lower: float  # one-sided lower confidence bound of mean_est
    upper: float  # one-sided upper confidence bound of mean_est
    confidence: float

    def to_json(self) -> dict[str, Any]:
        return {"method": "paired bootstrap over validation rows, one-sided; unknown outcomes estimated by "
                          "each model's confidence, calibrated on the rows whose outcome is known",
                "rows": self.rows, "known_rows": self.known, "unknown_rows": self.rows - self.known,
                "advantage_pessimistic": self.mean_lo, "advantage_optimistic": self.mean_hi,
                "advantage_estimate": self.mean_est, "lower_bound": self.lower, "upper_bound": self.upper,
                "confidence": self.confidence}


def calibration(kind: TaskKind, items: Sequence[Item], predicted: Sequence[Any],
                confidence: Sequence[float]) -> float:
    """How far to trust a model's confidence: its accuracy over its mean confidence on the rows
    whose outcome is known, at most 1 (an over-confident model is scaled down, an under-confident
    one is not scaled up); 0 with no known row.  A row from a client that flips, whose outcome
    is known whichever way its signal went, counts by the unbiased reading of it (as in
    `advantage_rows`), so noise does not pass for the model's own mistakes, and every noisy row
    weighs as `informative` says."""
    hits = total = 0.0
    for it, p, c in zip(items, predicted, confidence):
        o = kind.outcome(it, p)
        if o is None:
            continue
        w = informative(it)
        if it.signal != 0 and it.flip > 0:
            other = kind.outcome(replace(it, signal=-it.signal), p)
            if other is not None:
                rho = min(it.flip, MAX_FLIP)
                o = ((1.0 - rho) * o - rho * other) / (1.0 - 2.0 * rho)
        hits, total = hits + w * o, total + w * c
    return min(1.0, max(0.0, hits / total)) if total > 0 else 0.0


def informative(item: Item) -> float:
    """(1 − 2ρ)² for a signal from a client that flips with ρ, else 1: the inverse of the variance
    its unbiased reading adds, so a client answering at random (ρ = ½) weighs nothing (the
    unbiased training loss weighs its rows the same way)."""
    return (1.0 - 2.0 * min(item.flip, 0.5)) ** 2 if item.signal != 0 else 1.0


def row_weight(item: Item) -> float:
    """A row's weight in the comparison: its training weight, times how informative it is."""
    return item.weight * informative(item)


def advantage_rows(kind: TaskKind, items: Sequence[Item], candidate: Evaluation, active: Evaluation
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: (d_lo, d_hi, d_est, known) for d = right(candidate) − right(active).  An unknown
    outcome is 0 or 1 in the bounds, and the model's calibrated confidence in the estimate (the
    pessimistic value when the model gave no confidence).

    A signal from a client that flips (Item.flip = ρ > 0) is read through its flips: with v(s) the
    row's estimate had the signal been s, the estimate is ((1 − ρ)·v(s) − ρ·v(−s)) / (1 − 2ρ),
    whose expectation over the flips is the advantage on the true signal (Natarajan et al. 2013's
    unbiased estimator, applied to the outcome rather than to a loss).  No prior on whether the
    shown answer was right enters, so it favours neither model; the price is variance, which
    the bootstrap sees.  The bounds stay those of the signals as given."""
    n = len(items)
    lo, hi, est, known = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)

    def scale(ev: Evaluation) -> float:
        if ev.confidence is None or not kind.calibrate_confidence:  # a prior over what the rows allow
            return 1.0
        return calibration(kind, items, ev.predicted, ev.confidence)

    cand_s, act_s = scale(candidate), scale(active)

    def value(item: Item, predicted: Any, conf: float | None, s: float, pessimistic: float) -> float:
        o = kind.outcome(item, predicted)
        return o if o is not None else (s * conf if conf is not None else pessimistic)

    def listed(values: list[Any] | None, i: int) -> Any:
        return None if values is None else values[i]

    for i, (it, c, a) in enumerate(zip(items, candidate.predicted, active.predicted)):
        if c == a:
            known[i] = True  # same answer, same outcome: a tie whatever the truth
            continue
        oc, oa = kind.outcome(it, c), kind.outcome(it, a)
        lo[i] = (oc if oc is not None else 0.0) - (oa if oa is not None else 1.0)
        hi[i] = (oc if oc is not None else 1.0) - (oa if oa is not None else 0.0)
        known[i] = oc is not None and oa is not None
        est[i] = (value(it, c, listed(candidate.confidence, i), cand_s, 0.0)
                  - value(it, a, listed(active.confidence, i), act_s, 1.0))
        if it.signal != 0 and it.flip > 0:
            rho = min(it.flip, MAX_FLIP)
            opposite = replace(it, signal=-it.signal)
            other = (value(opposite, c, listed(candidate.flipped, i), cand_s, 0.0)
                     - value(opposite, a, listed(active.flipped, i), act_s, 1.0))
            est[i] = ((1.0 - rho) * est[i] - rho * other) / (1.0 - 2.0 * rho)
    return lo, hi, est, known


def compare(kind: TaskKind, items: Sequence[Item], candidate: Evaluation, active: Evaluation, *,
            confidence: float, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Comparison:
    """The paired comparison of two models' answers on the same rows."""
    lo, hi, est, known = advantage_rows(kind, items, candidate, active)
    w = np.array([row_weight(it) for it in items], dtype=float)
    n = len(items)
    if n == 0 or w.sum() <= 0:
        return Comparison(n, int(known.sum()), 0.0, 0.0, 0.0, -1.0, 1.0, confidence)
    rng = np.random.default_rng(seed)
    means: list[np.ndarray] = []
    chunk = max(1, 2_000_000 // n)  # resample in chunks: at most ~2M indices in memory at once
    for start in range(0, samples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, samples - start), n))
        ws = w[idx]
        means.append((ws * est[idx]).sum(axis=1) / ws.sum(axis=1).clip(min=EPS))
    boot = np.concatenate(means)
    total = w.sum()
    return Comparison(
        rows=n, known=int(known.sum()),
        mean_lo=float((w * lo).sum() / total), mean_hi=float((w * hi).sum() / total),
        mean_est=float((w * est).sum() / total),
        lower=float(np.quantile(boot, 1.0 - confidence)), upper=float(np.quantile(boot, confidence)),
        confidence=confidence,
    )


def compare_ratio(kind: TaskKind, items: Sequence[Item], candidate: Evaluation, active: Evaluation, *,
                  confidence: float, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Comparison:
    """The paired comparison of a ratio metric (`TaskKind.ratio_terms`, e.g. entity F1) on rows
    whose truth is known: the difference Σnum/Σden (candidate) − Σnum/Σden (active), bootstrapped
    over rows (weighted as in training).  Every row is known; a ratio with nothing to find and
    nothing found counts as perfect."""
    n = len(items)
    terms = np.array([[*kind.ratio_terms(it, c), *kind.ratio_terms(it, a)]  # type: ignore[misc]
                      for it, c, a in zip(items, candidate.predicted, active.predicted)], dtype=float).reshape(n, 4)
    w = np.array([it.weight for it in items], dtype=float)

    def diff(ws: np.ndarray, t: np.ndarray) -> np.ndarray:
        sums = (ws[..., None] * t).sum(axis=-2)
        ratio = lambda num, den: np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)  # noqa: E731
        return ratio(sums[..., 0], sums[..., 1]) - ratio(sums[..., 2], sums[..., 3])

    if n == 0 or w.sum() <= 0:
        return Comparison(n, n, 0.0, 0.0, 0.0, -1.0, 1.0, confidence)
    rng = np.random.default_rng(seed)
    boot = []
    chunk = max(1, 500_000 // n)
    for start in range(0, samples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, samples - start), n))
        boot.append(diff(w[idx], terms[idx]))
    allb = np.concatenate(boot)
    est = float(diff(w, terms))
    return Comparison(rows=n, known=n, mean_lo=est, mean_hi=est, mean_est=est,
                      lower=float(np.quantile(allb, 1.0 - confidence)), upper=float(np.quantile(allb, confidence)),
                      confidence=confidence)


@dataclass
class Verdict:
    decision: str  # promote | reject | inconclusive
    reason: str
    candidate: dict[str, Any]
    active: dict[str, Any]
    tolerance: float
    max_recall_drop: float
    comparison: Comparison | None = None

    @property
    def promote(self) -> bool:
        return self.decision == "promote"

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.decision,
            "reason": self.reason,
            "tolerance": self.tolerance,
            "max_recall_drop": self.max_recall_drop,
            "comparison": self.comparison.to_json() if self.comparison else None,
            "candidate": self.candidate,
            "active": self.active,
        }


def look_confidence(confidence: float, look: int) -> float:
    """The confidence a candidate's `look`-th judgement needs (look 1 is its own run's).  Judging
    the same candidate again on more rows is a sequential test: each later look spends half of
    the error the previous one did, so over all looks the chance of promoting a version worse
    than the tolerance stays below 2·(1 − confidence), however the looks fall."""
    if look < 1:
        raise ValueError(f"look must be >= 1, got {look}")
    return 1.0 - (1.0 - confidence) / 2.0 ** (look - 1)


def recall_drops(candidate: dict[str, Any], active: dict[str, Any], max_recall_drop: float) -> list[str]:
    """Classes (with enough validation examples) whose recall fell by more than the limit."""
    a_ex, c_ex = active.get("examples") or {}, candidate.get("examples") or {}
    a_recall, c_recall, support = a_ex.get("recall", {}), c_ex.get("recall", {}), a_ex.get("support", {})
    if not isinstance(a_recall, dict) or not isinstance(c_recall, dict):  # a kind without per-class recall
        return []
    problems = []
    for label in sorted(a_recall):
        if support.get(label, 0) < MIN_RECALL_SUPPORT:
            continue
        drop = a_recall[label] - c_recall.get(label, 0.0)
        if drop > max_recall_drop + EPS:
            problems.append(f"recall of {label!r} fell {a_recall[label]:.3f} -> {c_recall.get(label, 0.0):.3f} "
                            f"(more than {max_recall_drop:g}, on {support[label]} examples)")
    return problems


def _subset(ev: Evaluation, idx: Sequence[int]) -> Evaluation:
    def pick(values: list[Any] | None) -> list[Any] | None:
        return None if values is None else [values[i] for i in idx]

    return Evaluation([ev.predicted[i] for i in idx], ev.metrics, pick(ev.confidence), pick(ev.flipped))


SOURCES = {"labelled": lambda it: it.signal == 0, "feedback": lambda it: it.signal != 0}


def judge(
    kind: TaskKind, items: Sequence[Item], candidate: Evaluation, active: Evaluation, *,
    tolerance: float = 0.01, max_recall_drop: float = 0.10, confidence: float = 0.95, min_rows: int = 30,
    seed: int = 0,
) -> Verdict:
    """Promote, reject, or keep collecting: `candidate` against `active` on the same rows.

    Labelled rows (examples and corrections) and ±1 feedback are tested apart, so plentiful
    feedback cannot outvote the labelled examples (or the other way round): any source with
    `min_rows` known outcomes that says "worse" rejects; promotion needs every such source to
    say "not worse", and at least one of them."""
    def verdict(decision: str, reason: str, comparison: Comparison | None = None) -> Verdict:
        return Verdict(decision, reason, candidate.metrics, active.metrics, tolerance, max_recall_drop, comparison)

    if not items:
        return verdict("inconclusive", "no validation data (no validation examples, no held-out feedback): "
                                       "nothing is promoted on faith")
    overall = compare(kind, items, candidate, active, confidence=confidence, seed=seed)
    drops = recall_drops(candidate.metrics, active.metrics, max_recall_drop)
    if drops:
        return verdict("reject", "; ".join(drops), overall)
    decided: dict[str, str] = {}
    notes: list[str] = []
    # Rows whose truth is known, for a kind judged on a ratio (entity F1), are tested on it as one
    # source; the other rows by source, on per-row outcomes.
    ratio = [i for i, it in enumerate(items) if kind.ratio_terms(it, candidate.predicted[i]) is not None]
    groups = {kind.ratio_name: ratio} if ratio else {}
    judged = set(ratio)
    for name, belongs in SOURCES.items():
        groups[name] = [i for i, it in enumerate(items) if belongs(it) and i not in judged]
    for name, idx in groups.items():
        if not idx:
            continue
        sub = ([items[i] for i in idx], _subset(candidate, idx), _subset(active, idx))
        cmp = (compare_ratio if ratio and name == kind.ratio_name else compare)(kind, *sub, confidence=confidence,
                                                                                seed=seed)
        note = (f"{name}: advantage {cmp.mean_est:+.4f} (bounds {cmp.mean_lo:+.4f}..{cmp.mean_hi:+.4f}) on "
                f"{cmp.rows} rows ({cmp.known} known), {confidence:.0%} interval {cmp.lower:+.4f}/{cmp.upper:+.4f}")
        # Evidence: rows whose outcome is known; for a kind whose unknown outcomes are estimated
        # from what each row allows (not from the model), every row.
        evidence = cmp.known if kind.calibrate_confidence else cmp.rows
        if evidence < min_rows:
            notes.append(f"{note} — too few {'known ' if kind.calibrate_confidence else ''}rows (need {min_rows})")
            continue
        notes.append(note)
        decided[name] = ("promote" if cmp.lower >= -tolerance - EPS else
                         "reject" if cmp.upper < -tolerance - EPS else "inconclusive")
    detail = "; ".join(notes) + f"; tolerance {tolerance:g}"
    worse = [n for n, d in decided.items() if d == "reject"]
    if worse:
        return verdict("reject", f"worse than the active beyond the tolerance on {', '.join(worse)} rows: {detail}",
                       overall)
    if decided and all(d == "promote" for d in decided.values()):
        return verdict("promote", f"not worse than the active beyond the tolerance: {detail}", overall)
    if not decided:
        return verdict("inconclusive", f"too few validation rows with a known outcome; keep collecting: {detail}",
                       overall)
    return verdict("inconclusive", f"cannot tell yet; keep collecting: {detail}", overall)
