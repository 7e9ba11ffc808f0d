#!/usr/bin/env bash
# The runs behind reports/noise/ (issue 22), from the project root with ../shared/data beside it,
# at commit a3f06ff (the corrected loss the default, the noise-aware gate, second looks).
# The loss comparison (bounded / corrected / unbiased under 30% flips) used --feedback-loss on the
# same command; "bounded" is reports/clinc150-gate/runs/all-intents-500-seed0.json (commit 5a1119e).
set -euo pipefail
out=reports/noise/runs
DATA="--train ../shared/data/clinc150/train.csv --test ../shared/data/clinc150/test.csv --epochs 2 --threads 1 --rounds 4 --test-size 1000"
# 4 x 500, seed 0: every scenario
flywheel simulate $DATA --traffic-per-round 500 --seed 0 --arms feedback,supervised,noise-0.3,noise-0.1,adversarial-0.2 \
  --json $out/500-seed0.json
flywheel simulate $DATA --traffic-per-round 500 --seed 0 --arms careless-0.2,mixture --json $out/500-scenarios-seed0.json
flywheel simulate $DATA --traffic-per-round 500 --seed 0 --noise 0.3 --arms trusted-0.05 --json $out/500-trusted-seed0.json
# 4 x 500, seeds 1 and 2: the same four arms, in two runs each, put together as 500-all-seedN.json
for seed in 1 2; do
  flywheel simulate $DATA --traffic-per-round 500 --seed $seed --arms feedback,noise-0.3 --json $out/500-seed$seed.json
  flywheel simulate $DATA --traffic-per-round 500 --seed $seed --arms noise-0.1,adversarial-0.2 \
    --json $out/500-more-seed$seed.json
  python - "$seed" <<'PY'
import json, sys
s, out = sys.argv[1], "reports/noise/runs"
a, b = (json.load(open(f"{out}/{n}-seed{s}.json")) for n in ("500", "500-more"))
a["arms"].update(b["arms"]); a["command"] += " ; " + b["command"]; a["duration_s"] += b["duration_s"]
json.dump(a, open(f"{out}/500-all-seed{s}.json", "w"), indent=1)
PY
done
flywheel simulate-combine $out/500-seed0.json $out/500-all-seed1.json $out/500-all-seed2.json \
  --json reports/noise/500-3seeds/result.json --report reports/noise/500-3seeds
# 4 x 1500, seed 0 (the issue's size; 2 CPU cores, no GPU machine lent)
flywheel simulate $DATA --traffic-per-round 1500 --seed 0 --arms noise-0.3,feedback --json $out/1500-seed0.json
flywheel simulate-combine $out/1500-seed0.json --json reports/noise/1500-seed0/result.json --report reports/noise/1500-seed0
# ratings from thumbs (vader), at commit ab85f48
flywheel simulate --train ../shared/data/vader/train.csv --test ../shared/data/vader/test.csv --epochs 2 --threads 1 \
  --range=-4,4 --anchor "-4=terrible, awful, I hate it" --anchor "4=wonderful, excellent, I love it" --name vader \
  --feedback-loss bounded --rounds 4 --traffic-per-round 250 --test-size 500 --arms feedback,supervised \
  --json $out/vader-thumbs-seed0.json
# the loss comparison under 30% flips, 4 x 500, seeds 0 and 1, at commit df8fa3d (before the
# unbiased loss weighed rows by (1-2rho)^2, before second looks; the candidates' accuracy is what it compares)
for seed in 0 1; do
  for loss in corrected unbiased; do
    flywheel simulate $DATA --traffic-per-round 500 --seed $seed --arms noise-0.3 --feedback-loss $loss \
      --json $out/loss-$loss-seed$seed.json
  done
done
