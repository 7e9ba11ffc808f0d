#!/usr/bin/env bash
# Call 1: versions, goal 1 (CUDA correctness), goal 2 (bench serving), pytest on CUDA.
set -o pipefail
S=$(date +%s); left() { echo $(( ${BUDGET:-565} - ($(date +%s) - S) )); }
{
  date -u; nvidia-smi; uname -a; nproc; free -g | head -2
  source .gpu/setup.sh || { echo SETUP FAILED; exit 1; }
  (cd .gpu/src && python3 - <<'PY'
import importlib.metadata as md, sys, torch, onnxruntime as ort
print("python", sys.version)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
print("onnxruntime", ort.__version__, ort.get_available_providers(), ort.get_device())
for p in ("transformers", "tokenizers", "safetensors", "peft", "onnx", "captum", "fastapi", "starlette", "uvicorn",
          "sqlalchemy", "pydantic", "numpy", "pytest", "pytest-xdist", "pytest-timeout", "onnxruntime-gpu"):
    try: print(" ", p, md.version(p))
    except md.PackageNotFoundError: print(" ", p, "MISSING")
import app.main, app.cli, app.tools.bench.serving, app.tools.simulate.command, app.serving.explain; print("app imports OK:", app.main.__file__)
PY
  )
} 2>&1 | tee $OUT/versions.log || exit 1
source .gpu/setup.sh >/dev/null 2>&1
cd .gpu/src
echo "=== goal 1: gpu_check ($(left) s left)"
timeout 170 python3 ../gpu_check.py $OUT/gpu_check.json ../shared/data 2>&1 | grep -v "Loading weights\|Writing model shards" | tee $OUT/gpu_check.log
echo "=== goal 2: bench serving ($(left) s left)"
timeout $(( $(left) - 75 )) python3 -m app.cli bench serving --parts ceiling,int8,http,naive,swap,feedback,trainer \
  --postgres none --csv ../shared/data/sst2/dev.csv --json $OUT/bench-serving-cuda.json 2>&1 | tee $OUT/bench.log
echo "=== pytest on CUDA ($(left) s left)"
FLYWHEEL_TEST_POSTGRES=skip timeout $(( $(left) )) python3 -m pytest -m "not faults" -n 14 --timeout 150 -p no:cacheprovider \
  -q -rfE --junitxml=$OUT/pytest.xml --ignore=tests/project/test_layers.py --ignore=tests/api/test_openapi.py 2>&1 | tee $OUT/pytest.log
echo "=== done after $(( $(date +%s) - S )) s"
