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

from app.tools.simulate.checks import kind_of, run_checks
from app.tools.simulate.result import ArmResult, SimulationResult


def combine(results: list[SimulationResult], *, command: str) -> SimulationResult:
    """One result from several (in the order given); arms present in every result only."""
    if not results:
        raise ValueError("no result to combine")
    names = [n for n in results[0].arms if all(n in r.arms for r in results)]
    if not names:
        raise ValueError("the results share no arm")
    first = results[0]
    arms = {name: ArmResult([run for r in results for run in r.arms[name].runs], same_as=first.arms[name].same_as)
            for name in names}
    return SimulationResult(
        command=command, machine=first.machine, model=first.model, dataset=first.dataset, sizes=first.sizes,
        options=first.options, finished_at=first.finished_at,
        duration_s=round(sum(r.duration_s or 0.0 for r in results), 1),
        zero_shot_accuracy=sum(a.zero_shot_accuracy for a in arms.values()) / len(arms),
        arms=arms, checks=run_checks(arms, budget=first.options.correction_budget, kind=kind_of(first.dataset.kind)),
        seeds=next(iter(arms.values())).seeds, complete=first.complete,
        combined_from=[r.command for r in results], merged_from=first.merged_from)


def read_result(path: Path) -> SimulationResult:
    """A result file `flywheel simulate --json` wrote (this version or an earlier one)."""
    return SimulationResult.from_json(json.loads(Path(path).read_text()))


def combine_files(paths: list[Path], *, command: str) -> SimulationResult:
    return combine([read_result(p) for p in paths], command=command)
