"""The verdict: promote, reject, or keep collecting.  Labelled rows and ±1 feedback are tested
apart, each by the paired comparison, and a class's recall that fell too far vetoes; a candidate
judged again on more rows (a second look) needs a higher confidence each time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from app.core.statuses import GateDecision
from app.kinds.base import TaskKind
from app.learning.dataset import Item
from app.learning.gate.bootstrap import EPS, Comparison, compare, compare_ratio
from app.learning.gate.evaluation import Evaluation

MIN_RECALL_SUPPORT = 10  # a recall on fewer validation examples is too noisy to veto a promotion
MAX_LOOKS = 3  # how many times one candidate is judged: its own run, then up to two second looks


@dataclass
class Verdict:
    """The gate's decision on a candidate, why, and the metrics and comparison it rests on."""

    decision: GateDecision
    reason: str
    candidate: dict[str, Any]
    active: dict[str, Any]
    tolerance: float
    max_recall_drop: float
    comparison: Comparison | None = None

    @property
    def promote(self) -> bool:
        return self.decision == GateDecision.PROMOTE

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
    def verdict(decision: GateDecision, reason: str, comparison: Comparison | None = None) -> Verdict:
        return Verdict(decision, reason, candidate.metrics, active.metrics, tolerance, max_recall_drop, comparison)

    if not items:
        return verdict(GateDecision.INCONCLUSIVE, "no validation data (no validation examples, no held-out feedback): "
                                                   "nothing is promoted on faith")
    overall = compare(kind, items, candidate, active, confidence=confidence, seed=seed)
    drops = recall_drops(candidate.metrics, active.metrics, max_recall_drop)
    if drops:
        return verdict(GateDecision.REJECT, "; ".join(drops), overall)
    decided: dict[str, GateDecision] = {}
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
        decided[name] = (GateDecision.PROMOTE if cmp.lower >= -tolerance - EPS else
                         GateDecision.REJECT if cmp.upper < -tolerance - EPS else GateDecision.INCONCLUSIVE)
    detail = "; ".join(notes) + f"; tolerance {tolerance:g}"
    worse = [n for n, d in decided.items() if d == GateDecision.REJECT]
    if worse:
        return verdict(GateDecision.REJECT,
                       f"worse than the active beyond the tolerance on {', '.join(worse)} rows: {detail}", overall)
    if decided and all(d == GateDecision.PROMOTE for d in decided.values()):
        return verdict(GateDecision.PROMOTE, f"not worse than the active beyond the tolerance: {detail}", overall)
    if not decided:
        return verdict(GateDecision.INCONCLUSIVE,
                       f"too few validation rows with a known outcome; keep collecting: {detail}", overall)
    return verdict(GateDecision.INCONCLUSIVE, f"cannot tell yet; keep collecting: {detail}", overall)
