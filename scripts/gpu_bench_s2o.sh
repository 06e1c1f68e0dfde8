#!/usr/bin/env bash
# The operator benches of reports/bench/, made on the lent H100 one device call per step (each must end
# within the call's 10 minutes; records are written as each measurement finishes, so a step cut short
# keeps what it measured: rebuild its markdown with `s2o-eval bench --render`):
#
#   bash scripts/gpu_bench_s2o.sh tests     # the GPU-only kernel tests (bf16, the Triton executor)
#   bash scripts/gpu_bench_s2o.sh capture   # gemma-3-270m's global layers over the essays, 128K
#   bash scripts/gpu_bench_s2o.sh s2o       # S2O's tau sweep, its variants and the token oracle
#   bash scripts/gpu_bench_s2o.sh peers     # every peer's main knob swept beside S2O, same inputs
#   bash scripts/gpu_bench_s2o.sh random    # Llama-3.1-8B-shaped random inputs (overhead only)
#   bash scripts/gpu_bench_s2o.sh planner   # attempts on S2O's density: finer segments, query permutation
#
# The capture stays on the machine (captures/, ~2.3 GB at 128K); reports go to $OUT.
set -u
. scripts/gpu_setup.sh
mkdir -p "$OUT" captures
CAPTURE=captures/gemma-128k.pt
BENCH=(--reps "${REPS:-5}" --warmup 2 --out-dir "$OUT" -q)
# (timeout runs programs, not the s2o-eval shell function: hence python3 -m s2o_eval)
stop() { timeout -k 15 -s INT "${LIMIT_S:-560}" "$@"; }

case "${1:?step: tests, capture, s2o, peers, planner or random}" in
  tests)
    python3 -m pytest -q -x tests/test_executor.py tests/test_planner.py tests/test_sparse_methods.py 2>&1 \
      | tail -15 | tee "$OUT/gpu-tests.txt" ;;
  capture)
    [ -f "$CAPTURE" ] || stop python3 -m s2o_eval capture --ctx 128k --allow-beyond-window --out "$CAPTURE" 2>&1 | tail -5 ;;
  s2o)  # variants: head_mean guide (one list per query head), tail stop rule; the oracle is the yardstick
    stop python3 -m s2o_eval bench --workload "$CAPTURE" --ctx 32k,128k --allow-beyond-window --name "${NAME:-s2o-h100}" \
      --methods fa2,cudnn,fa3,s2o,s2o/head,s2o/tail,token_oracle \
      --sweep s2o:tau=0,0.0001,0.0003,0.001,0.003,0.01 \
      --method-args s2o/head:guide=head_mean --sweep s2o/head:tau=0.0003,0.001,0.003,0.01 \
      --method-args s2o/tail:stop_rule=tail --sweep s2o/tail:tau=0.003,0.01,0.03,0.1 \
      --sweep token_oracle:tau=0.0003,0.001,0.003,0.01 "${BENCH[@]}" 2>&1 | tail -80 ;;
  peers)
    stop python3 -m s2o_eval bench --workload "$CAPTURE" --ctx ${CTX:-32k,128k} --allow-beyond-window --name "${NAME:-peers-h100}" \
      --methods fa2,cudnn,fa3,s2o,flexprefill,xattention,pbs,minference,block_oracle \
      --sweep s2o:tau=0.0003,0.001,0.003,0.01 --sweep flexprefill:gamma=0.8,0.9,0.95,0.99 \
      --sweep xattention:threshold=0.8,0.9,0.95,0.99 --sweep pbs:threshold=0.8,0.9,0.95,0.99 \
      --sweep minference:budget_scale=0.25,0.5,1,2 --sweep block_oracle:threshold=0.8,0.9,0.95,0.99 \
      "${BENCH[@]}" 2>&1 | tail -80 ;;
  planner)  # does pooling fewer queries into a guide, or permuting them, close the gap to the token oracle?
    stop python3 -m s2o_eval bench --workload "$CAPTURE" --ctx ${CTX:-128k} --allow-beyond-window --name "${NAME:-s2o-planner}" \
      --methods fa2,fa3,s2o,s2o/seg256,s2o/seg128,s2o/qperm \
      --sweep s2o:tau=0.0003,0.001,0.003 \
      --method-args s2o/seg256:segment=256 --sweep s2o/seg256:tau=0.0003,0.001,0.003 \
      --method-args s2o/seg128:segment=128 --sweep s2o/seg128:tau=0.0003,0.001,0.003 \
      --method-args s2o/qperm:query_permute=true --sweep s2o/qperm:tau=0.0003,0.001,0.003 \
      "${BENCH[@]}" 2>&1 | tail -50 ;;
  random)
    stop python3 -m s2o_eval bench --workload llama8b-random --ctx 32k,128k --name "${NAME:-random-h100}" \
      --methods fa2,cudnn,fa3,s2o,s2o/tail,flexprefill,xattention,pbs,minference \
      --method-args s2o/tail:stop_rule=tail "${BENCH[@]}" 2>&1 | tail -60 ;;
esac
