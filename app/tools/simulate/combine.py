"""Several `flywheel simulate` results, one per seed, as one multi-seed result.

`--seeds N` keeps one scenario (the same traffic and test texts) and varies the users and
training.  Separate runs with `--seed 0`, `--seed 1`, … also vary the scenario (which texts,
which labels with `--max-labels`): this puts them side by side the same way, each arm's
per-seed results aggregated (mean ± spread per round, the targets judged on the mean, the
gate's decisions counted over every round of every seed), so results taken before and after a
change can be compared run for run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.tools.simulate.checks import run_checks
from app.tools.simulate.seeds import aggregate


def combine(results: list[dict[str, Any]], *, command: str) -> dict[str, Any]:
    """One result from several (in the order given); arms present in every result only."""
    if not results:
        raise ValueError("no result to combine")
    names = [n for n in results[0]["arms"] if all(n in r["arms"] for r in results)]
    if not names:
        raise ValueError("the results share no arm")
    arms: dict[str, Any] = {}
    for name in names:
        per_seed = []
        for r in results:
            arm = dict(r["arms"][name])
            if arm.get("by_seed"):
                per_seed.extend(arm["by_seed"])
            else:
                arm.setdefault("seed", r.get("seed"))
                per_seed.append(arm)
        arms[name] = aggregate(per_seed)
    first = results[0]
    budget = (first.get("options") or {}).get("correction_budget")
    seeds = [a.get("seed") for a in next(iter(arms.values())).get("by_seed", [])] or [first.get("seed")]
    return {
        **{k: v for k, v in first.items() if k not in ("arms", "checks", "seed", "seeds", "command")},
        "command": command,
        "combined_from": [r.get("command") for r in results],
        "seeds": seeds,
        "duration_s": round(sum(r.get("duration_s") or 0.0 for r in results), 1),
        "zero_shot_accuracy": sum(a["zero_shot_accuracy"] for a in arms.values()) / len(arms),
        "arms": arms,
        "checks": run_checks(arms, budget=budget, kind=first["dataset"].get("kind") or "classification"),
    }


def combine_files(paths: list[Path], *, command: str) -> dict[str, Any]:
    return combine([json.loads(Path(p).read_text()) for p in paths], command=command)
