"""Several seeds of one arm: the per-seed results -> the arm's entry in the result file.

Every seed of an arm sees the same traffic and test texts; the seed varies the users' draws,
which texts the adversary sends and training's seed (FLYWHEEL_SEED of the service).

With one seed the arm's entry is that seed's result (the format of a single run), plus the
spread fields below.  With several, the entry holds the per-round means under the same names
(`accuracy_by_round`, `macro_f1_by_round`, `signals_by_round`, `corrections_by_round`, …,
`zero_shot_accuracy`), the seeds' own results under `by_seed`, and no per-run fields at the
top (`rounds`, `gate_by_round`, `version_by_round`, `candidate_accuracy_by_round`, `data_dir`
are per seed only).  Either way:

  seeds                          the seeds run, in order
  accuracy_mean_by_round         mean test accuracy after each round (= accuracy_by_round)
  accuracy_std_by_round          sample standard deviation over seeds (None with one seed)
  accuracy_min_by_round, accuracy_max_by_round
  candidate_accuracy_std_by_round  sample std of each round's candidate's test accuracy (promoted or
                                 not) over the seeds where it was scored (None for fewer than two)
  zero_shot_accuracy_spread      {mean, std, min, max, n} of version 0's accuracy

`runs(arm)` gives the per-seed results of an entry whichever the shape.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

Json = dict[str, Any]

# Per-round numbers averaged over seeds (each seed's list has one entry per round).
MEAN_SERIES = ("accuracy_by_round", "macro_f1_by_round", "signals_by_round", "signals_used_by_round",
               "traffic_accuracy_by_round", "corrections_by_round", "asked_by_round", "mae_by_round")
# Per-run fields that only make sense per seed: kept in `by_seed` when there are several.
PER_RUN = ("rounds", "gate_by_round", "version_by_round", "candidate_accuracy_by_round", "data_dir", "seed")


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def std(xs: Sequence[float]) -> float | None:
    """Sample standard deviation (n − 1); None for fewer than two values."""
    return statistics.stdev(xs) if len(xs) >= 2 else None


def spread(xs: Sequence[float]) -> Json:
    return {"mean": mean(xs), "std": std(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def runs(arm: Json) -> list[Json]:
    """The per-seed results of an arm's entry (the entry itself when it holds one seed)."""
    return arm.get("by_seed") or [arm]


def round_std(arm: Json, r: int) -> float:
    """The seeds' standard deviation of the test accuracy after round `r` (0: zero-shot); 0 with one seed."""
    if r == 0:
        s = (arm.get("zero_shot_accuracy_spread") or {}).get("std")
    else:
        stds = arm.get("accuracy_std_by_round") or []
        s = stds[r - 1] if r - 1 < len(stds) else None
    return s or 0.0


def gate_spread(arm: Json, r: int) -> float:
    """How far apart a round-`r` candidate and its active must be to count as better or worse: the
    larger of the seeds' spread of the active's accuracy after that round and of the candidates'
    accuracy in it (when every seed rejects, the actives agree exactly and only the candidates
    show how much a retrain varies); 0 with one seed."""
    stds = arm.get("candidate_accuracy_std_by_round") or []
    cand = stds[r - 1] if 0 < r <= len(stds) else None
    return max(round_std(arm, r), cand or 0.0)


def _by_round(per_seed: list[Json], key: str) -> list[list[float]]:
    """For each round, the seeds' values of `key` (rounds every seed has)."""
    n = min(len(p.get(key) or []) for p in per_seed)
    return [[p[key][i] for p in per_seed] for i in range(n)]


def aggregate(per_seed: list[Json]) -> Json:
    """The arm's entry from its seeds' results (each one `ArmRecord.to_json()`), in seed order."""
    if not per_seed:
        raise ValueError("no seed to aggregate")
    first = per_seed[0]
    if len(per_seed) == 1:
        out = dict(first)
    else:
        out = {k: v for k, v in first.items() if k not in PER_RUN and k not in MEAN_SERIES}
        for key in MEAN_SERIES:
            if all(key in p for p in per_seed):
                out[key] = [mean(xs) for xs in _by_round(per_seed, key)]
        for key in ("zero_shot_accuracy", "zero_shot_macro_f1", "zero_shot_mae"):
            values = [p[key] for p in per_seed if p.get(key) is not None]
            out[key] = mean(values) if values else None
        out["seconds"] = round(sum(p.get("seconds") or 0.0 for p in per_seed), 1)
        out["by_seed"] = per_seed
    acc = [spread(xs) for xs in _by_round(per_seed, "accuracy_by_round")]
    out["seeds"] = [p.get("seed") for p in per_seed]
    out["accuracy_mean_by_round"] = [s["mean"] for s in acc]
    out["accuracy_std_by_round"] = [s["std"] for s in acc]
    out["accuracy_min_by_round"] = [s["min"] for s in acc]
    out["accuracy_max_by_round"] = [s["max"] for s in acc]
    cands = [[c for c in cs if c is not None] for cs in _by_round(per_seed, "candidate_accuracy_by_round")]
    out["candidate_accuracy_std_by_round"] = [std(cs) for cs in cands]
    zero = [p["zero_shot_accuracy"] for p in per_seed if p.get("zero_shot_accuracy") is not None]
    out["zero_shot_accuracy_spread"] = spread(zero) if zero else None
    return out


def fmt(value: float | None, sd: float | None = None, *, digits: int = 3, scale: float = 1.0) -> str:
    """'0.812 ± 0.010' (with a spread), '0.812' (without), '–' for nothing."""
    if value is None:
        return "–"
    text = f"{value * scale:.{digits}f}"
    return text if sd is None else f"{text} ± {sd * scale:.{digits}f}"


def final_text(arm: Json, *, digits: int = 4, scale: float = 1.0) -> str:
    """The last round's mean accuracy, with its spread over seeds when there are several."""
    stds = arm.get("accuracy_std_by_round") or [None]
    return fmt(arm["accuracy_by_round"][-1], stds[-1], digits=digits, scale=scale)
