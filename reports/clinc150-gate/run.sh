#!/usr/bin/env bash
# The runs behind reports/clinc150-gate/, from the project root with ../shared/data beside it.
# "before" is commit 382e702 (the old gate: a point estimate with a tolerance); everything else is
# this commit's gate.  Each seed is its own scenario (--seed also picks the 30 intents and texts),
# the same scenarios before and after, so the two compare seed for seed.
set -euo pipefail
out=reports/clinc150-gate/runs
COMMON="--train ../shared/data/clinc150/train.csv --test ../shared/data/clinc150/test.csv --max-labels 30
        --rounds 4 --traffic-per-round 75 --test-size 300 --epochs 2 --threads 1"
for seed in 0 1 2; do
  # before: run these four with `git checkout 382e702` first
  # flywheel simulate $COMMON --seed $seed --arms feedback,supervised,noise-0.3,adversarial-0.1 --json $out/before-seed$seed.json
  flywheel simulate $COMMON --seed $seed --arms feedback,supervised,noise-0.3,adversarial-0.1 --json $out/main-seed$seed.json
  flywheel simulate $COMMON --seed $seed --feedback-loss robust --arms feedback,noise-0.3,adversarial-0.1 --json $out/robust-seed$seed.json
  flywheel simulate $COMMON --seed $seed --arms active-0.1,random-0.1,random-0.2 --json $out/asking-seed$seed.json
  flywheel simulate $COMMON --seed $seed --gate-confidence 0.9 --gate-min-rows 20 \
    --arms feedback,supervised,noise-0.3,adversarial-0.1 --json $out/gate90-seed$seed.json
done
for k in before main robust asking gate90; do
  flywheel simulate-combine $out/$k-seed0.json $out/$k-seed1.json $out/$k-seed2.json \
    --json reports/clinc150-gate/$k/result.json --report reports/clinc150-gate/$k
done
