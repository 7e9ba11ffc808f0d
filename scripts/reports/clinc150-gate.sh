#!/usr/bin/env bash
# The runs behind reports/clinc150-gate/, from the project root with ../shared/data beside it.
# Gates: "before" = commit 382e702, "pessimistic" = commit ee3711a, "final" = commit 377c83c:
# check out that commit to rerun its files.  Each seed is its own scenario (--seed also picks
# the 30 intents and texts), the same scenarios for every gate.
set -euo pipefail
out=reports/clinc150-gate/runs
DATA="--train ../shared/data/clinc150/train.csv --test ../shared/data/clinc150/test.csv --epochs 2 --threads 1"
SMALL="$DATA --max-labels 30 --rounds 4 --traffic-per-round 75 --test-size 300"
BIG="$DATA --rounds 4 --traffic-per-round 500 --test-size 1000 --seed 0 --arms feedback,noise-0.3"
FULL="$DATA --rounds 4 --traffic-per-round 1500 --test-size 1000 --seed 0 --arms feedback,supervised,noise-0.3"
flywheel simulate $FULL --json $out/all-intents-1500-seed0.json  # then write_report into full-1500/ (commit 5a1119e)
flywheel simulate $BIG --json $out/all-intents-500-seed0.json  # before-… and pessimistic-… likewise
for seed in 0 1 2; do
  flywheel simulate $SMALL --seed $seed --arms feedback,supervised,noise-0.3,adversarial-0.1 \
    --json $out/main-seed$seed.json  # before-seedN likewise
  # with the pessimistic gate (ee3711a):
  flywheel simulate $SMALL --seed $seed --feedback-loss robust --arms feedback,noise-0.3,adversarial-0.1 \
    --json $out/pessimistic-robust-seed$seed.json
  flywheel simulate $SMALL --seed $seed --arms active-0.1,random-0.1,random-0.2 --json $out/pessimistic-asking-seed$seed.json
  flywheel simulate $SMALL --seed $seed --gate-confidence 0.9 --gate-min-rows 20 \
    --arms feedback,supervised,noise-0.3,adversarial-0.1 --json $out/pessimistic-gate90-seed$seed.json
done
for k in before main pessimistic-main pessimistic-robust pessimistic-asking pessimistic-gate90; do
  flywheel simulate-combine $out/$k-seed0.json $out/$k-seed1.json $out/$k-seed2.json \
    --json reports/clinc150-gate/$k/result.json --report reports/clinc150-gate/$k
done
