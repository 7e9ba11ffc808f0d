"""One `flywheel simulate` result per seed from its per-arm runs (each arm of a seed ran as its own
`--arms A` process, in parallel; a multi-arm run runs the same arms one after another on the same
scenario).  Header from the first file, arms in the order given, checks recomputed."""
import json
import sys
from dataclasses import replace
from pathlib import Path

from app.tools.simulate.checks import kind_of, run_checks
from app.tools.simulate.combine import read_result
from app.tools.simulate.result import ArmResult

out, files = Path(sys.argv[1]), sys.argv[2:]
runs = [read_result(Path(f)) for f in files]
first = runs[0]
assert len({r.seed for r in runs}) == 1
arms: dict[str, ArmResult] = {}
for r in runs:
    arms.update(r.arms)
merged = replace(first, arms=arms, command=" + ".join(r.command for r in runs),
                 duration_s=max(r.duration_s for r in runs), complete=all(bool(r.complete) for r in runs),
                 checks=run_checks(arms, budget=first.options.correction_budget, kind=kind_of(first.dataset.kind)),
                 merged_from=[Path(f).name for f in files])
out.write_text(json.dumps(merged.to_json(), indent=1))
print(out, list(arms), merged.duration_s)
