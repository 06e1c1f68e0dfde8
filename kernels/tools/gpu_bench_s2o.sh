#!/usr/bin/env bash
# One device call: GPU-only tests of the kernels, a 128K capture of gemma-3-270m over the essays,
# then the operator bench (real attention and Llama-shaped random inputs) against FA2 / cuDNN / FA3.
# Usage (on the device machine, repo root): bash kernels/tools/gpu_bench_s2o.sh NAME
# Measured 2026-11-22: the capture workload alone (fa2, cudnn, fa3, s2o x 3 taus, 32K + 128K) takes ~40 s;
# token_oracle, s2o at tau 0 (autotuning) and the random workload at 128K push the whole past a 600 s call:
# split them over calls. Results go to $OUT as each measurement finishes.
set -u
name=${1:-s2o-h100}
. kernels/tools/gpu_setup.sh
mkdir -p "$OUT" captures; ls /tmp/site | grep -c . ; ls /tmp/s2o-cache/models 2>&1
[ -n "${SKIP_TESTS:-}" ] || python3 -m pytest -q -x tests/test_executor.py tests/test_planner.py tests/test_sparse_methods.py 2>&1 | tail -15 | tee "$OUT/gpu-tests.txt"
[ -f captures/gemma-128k.pt ] || s2o-eval capture --ctx 128k --allow-beyond-window --out captures/gemma-128k.pt 2>&1 | tail -5
s2o-eval bench --workload captures/gemma-128k.pt --workload llama8b-random --ctx 32k,128k --allow-beyond-window \
  --methods fa2,cudnn,fa3,s2o,token_oracle --sweep s2o:tau=0,0.01,0.003,0.001 --sweep token_oracle:tau=0.01,0.003,0.001 \
  --name "$name" --reps 5 --out-dir "$OUT" -q 2>&1 | tail -60

