#!/usr/bin/env bash
# Call 3: the issue-12 full-size simulation, seeds 0,1,2 x arms feedback,supervised,noise-0.3 as 9
# parallel processes (each arm of a seed is its own service, as in a 3-arm run), and pytest on CUDA
# beside them (-v so that test names survive a cut-off).  Hard cap: CAP seconds.
S=$(date +%s); CAP=${CAP:-470}
source .gpu/setup.sh > /tmp/setup.log 2>&1 || { cat /tmp/setup.log; exit 1; }
cd .gpu/src
W=/tmp/sim; mkdir -p $W
D=../shared/data/clinc150
for s in 0 1 2; do for a in feedback supervised noise-0.3; do
  timeout $CAP python3 -m app.cli simulate --train $D/train.csv --test $D/test.csv --epochs 2 --threads 1 \
    --rounds 4 --traffic-per-round 1500 --test-size 1000 --seed $s --arms $a --json $W/seed$s-$a.json \
    > $W/seed$s-$a.log 2>&1 &
done; done
FLYWHEEL_TEST_POSTGRES=skip timeout $(( CAP - 5 )) python3 -m pytest -m "not faults" -n 4 --timeout 150 -p no:cacheprovider \
  -v -rfE --ignore=tests/project/test_layers.py --ignore=tests/api/test_openapi.py > $OUT/pytest-v.log 2>&1 &
while [ $(( $(date +%s) - S )) -lt $CAP ] && [ -n "$(jobs -r)" ]; do sleep 5; done
echo "after $(( $(date +%s) - S )) s; still running: $(jobs -r | wc -l)"
sleep 3
ls -la $W; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
tar -czf $OUT/sim-runs.tgz -C $W .
grep -c PASSED $OUT/pytest-v.log; grep -c FAILED $OUT/pytest-v.log; tail -5 $OUT/pytest-v.log
