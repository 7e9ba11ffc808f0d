#!/usr/bin/env bash
# Call 2: diagnosis of the fp16 slowness, then bench serving again with the fix in resolve_device.
set -o pipefail
S=$(date +%s); left() { echo $(( ${BUDGET:-350} - ($(date +%s) - S) )); }
source .gpu/setup.sh > /tmp/setup.log 2>&1 || { cat /tmp/setup.log; exit 1; }
cd .gpu/src
echo "=== diag ($(left) s left)"
timeout 115 python3 ../diag.py $OUT/diag.json ../shared/data/sst2/dev.csv 2>&1 | grep -v "Loading weights\|Writing model shards\|LOAD REPORT\|pooler\|UNEXPECTED\|^Key\|^---\|^Notes\|^$" | tee $OUT/diag.log
echo "=== bench serving with the fix ($(left) s left)"
timeout $(left) python3 -m app.cli bench serving --parts ceiling,int8,http,naive,swap,feedback,trainer \
  --postgres none --csv ../shared/data/sst2/dev.csv --json $OUT/bench-serving-cuda-fixed.json 2>&1 | tee $OUT/bench-fixed.log
echo "=== done after $(( $(date +%s) - S )) s"
