#!/usr/bin/env bash
# One device call: GPU-only tests of the kernels, a 128K capture of gemma-3-270m over the essays,
# then the operator bench (real attention and Llama-shaped random inputs) against FA2 / cuDNN / FA3.
# Usage (on the device machine, repo root): bash tools/gpu/bench_s2o.sh NAME
set -u
name=${1:-s2o-h100}
. tools/gpu/setup.sh
mkdir -p "$OUT" captures; ls /tmp/site | grep -c . ; ls /tmp/s2o-cache/models 2>&1
[ -n "${SKIP_TESTS:-}" ] || python3 -m pytest -q -x tests/test_executor.py tests/test_planner.py tests/test_sparse_methods.py 2>&1 | tail -15 | tee "$OUT/gpu-tests.txt"
[ -f captures/gemma-128k.pt ] || s2o-eval capture --ctx 128k --allow-beyond-window --out captures/gemma-128k.pt 2>&1 | tail -5
s2o-eval bench --workload captures/gemma-128k.pt --workload llama8b-random --ctx 32k,128k --allow-beyond-window \
  --methods fa2,cudnn,fa3,s2o,token_oracle --sweep s2o:tau=0,0.01,0.003,0.001 --sweep token_oracle:tau=0.01,0.003,0.001 \
  --name "$name" --reps 5 -q 2>&1 | tail -60
cp reports/bench/"$name".* "$OUT"/ 2>/dev/null
