#!/usr/bin/env bash
# Call 4: the grow_vocabulary fix on CUDA (test_chinese), and the tests that failed on CUDA rerun with CUDA hidden.
source .gpu/setup.sh > /tmp/setup.log 2>&1 || { cat /tmp/setup.log; exit 1; }
cd .gpu/src
export FLYWHEEL_TEST_POSTGRES=skip
echo "=== CUDA visible: tests/kinds/test_chinese.py (grow_vocabulary fix)"
timeout 60 python3 -m pytest tests/kinds/test_chinese.py -n 8 -p no:cacheprovider -q -rfE 2>&1 | grep -v Benchmark | tail -8
echo "=== CUDA hidden (CUDA_VISIBLE_DEVICES=''): the tests that failed with CUDA visible"
CUDA_VISIBLE_DEVICES= timeout 80 python3 -m pytest -n 10 -p no:cacheprovider -q -rfE \
  "tests/api/test_api_health.py::test_readyz_lists_loaded_models" "tests/serving/test_engines.py::test_the_worker_prepares_engines_for_a_version_without_them_and_serving_moves_to_it" \
  "tests/api/test_explain.py::test_an_explanation_names_spans_of_the_text_with_weights" tests/learning/test_gate.py \
  "tests/process/test_http_server.py::test_round_trip_over_real_http" "tests/serving/test_serving.py::test_a_task_with_quantize_serves_the_int8_model" \
  "tests/runs/test_worker.py::test_queued_run_is_claimed_executed_and_promoted" 2>&1 | grep -v Benchmark | tail -8
