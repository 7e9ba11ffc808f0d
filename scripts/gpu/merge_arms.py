"""One `flywheel simulate` result per seed from its per-arm runs (each arm of a seed ran as its own
`--arms A` process, in parallel; a multi-arm run runs the same arms one after another on the same
scenario).  Header from the first file, arms in the order given, checks recomputed."""
import json
import sys
from pathlib import Path
from app.tools.simulate.checks import run_checks

out, files = Path(sys.argv[1]), sys.argv[2:]
runs = [json.loads(Path(f).read_text()) for f in files]
first = runs[0]
assert len({r["seed"] for r in runs}) == 1
arms = {}
for r in runs:
    arms.update(r["arms"])
merged = {**first, "arms": arms,
          "command": " + ".join(r["command"] for r in runs),
          "duration_s": max(r["duration_s"] for r in runs),
          "complete": all(r["complete"] for r in runs),
          "checks": run_checks(arms, budget=first["options"]["correction_budget"],
                               kind=first["dataset"].get("kind") or "classification"),
          "merged_from": [Path(f).name for f in files]}
out.write_text(json.dumps(merged, indent=1))
print(out, list(arms), merged["duration_s"])
