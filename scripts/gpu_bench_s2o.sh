#!/usr/bin/env bash
# The operator benches of reports/bench/, made on the lent GPU one device call per step (each must end
# within the call's 10 minutes; records are written as each measurement finishes, so a step cut short
# keeps what it measured: rebuild its markdown with `s2o-eval bench --render`):
#
#   bash scripts/gpu_bench_s2o.sh tests     # the GPU-only kernel tests (bf16, the Triton executor and planner)
#   bash scripts/gpu_bench_s2o.sh speed     # executor efficiency per launch config, planner time (random inputs)
#   bash scripts/gpu_bench_s2o.sh capture   # gemma-3-270m's global layers over the essays, 128K
#   bash scripts/gpu_bench_s2o.sh s2o       # S2O's tau sweep (head_mean and gauss scores; walk = no head on the dense kernel) beside PBS, the oracles and FA2/cuDNN/FA3
#   bash scripts/gpu_bench_s2o.sh variants  # S2O's planner choices (score, rank, patience) in one run
#   bash scripts/gpu_bench_s2o.sh peers     # every peer's main knob swept beside S2O, same inputs
#   bash scripts/gpu_bench_s2o.sh random    # Llama-3.1-8B-shaped random inputs (overhead only)
#   bash scripts/gpu_bench_s2o.sh targets   # the S2O issue's done-when table: S2O, its variants, the peers at 3% / 8%
#   bash scripts/gpu_bench_s2o.sh combos    # S2O's default beside the ranking it replaced and longer patience, 128K and 32K
#   bash scripts/gpu_bench_s2o.sh chunks    # chunked prefill: the last 8K chunk of 32K and of 128K, S2O and PBS beside the dense kernels' cached paths
#
# The capture stays on the machine (captures/, ~2.3 GB at 128K); reports go to $OUT. CTX, NAME, REPS,
# LIMIT_S, TAUS, MARK, SHAPE, DENSITIES, PATIENCE, SCORES and SPEED_CONFIGS override the defaults below.
set -u
. scripts/gpu_setup.sh
mkdir -p "$OUT" captures
CAPTURE=captures/gemma-128k.pt
# reports are named after the card that made them (h100 / h200)
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | grep -o 'H[0-9][0-9]*' | head -1 | tr H h)
CARD=${CARD:-gpu}
BENCH=(--reps "${REPS:-3}" --warmup 1 --out-dir "$OUT" -q)
# (timeout runs programs, not the s2o-eval shell function: hence python3 -m s2o_eval)
stop() { timeout -k 15 -s INT "${LIMIT_S:-560}" "$@"; }
# per-head tiles of 128 positions at head dim 256: chunk widths, warps, pipeline depth, burst length
SPEED_CONFIGS=${SPEED_CONFIGS:-"block_m=128,block_n=64,num_warps=8,num_stages=2;block_m=128,block_n=64,num_warps=8,num_stages=3;block_m=128,block_n=128,num_warps=8,num_stages=2;block_m=128,block_n=64,num_warps=8,num_stages=2,stop_burst=8"}

case "${1:?step: tests, speed, capture, s2o, variants, peers, random, targets, combos or chunks}" in
  tests)  # MARK=gpu runs only the GPU-only cases (bf16); by default every kernel test, on the GPU
    stop python3 -m pytest -q -rfE ${MARK:+-m "$MARK"} tests/test_executor.py tests/test_planner.py tests/test_sparse_methods.py \
      tests/test_peers_block.py tests/test_peers_flashprefill.py tests/test_skip_softmax.py tests/test_forecast.py tests/test_offset.py 2>&1 | tail -40 | tee "$OUT/gpu-tests-$CARD.txt" ;;
  speed)
    stop python3 scripts/kernel_speed.py --ctx "${CTX:-32768,131072}" --shape "${SHAPE:-gemma}" --densities "${DENSITIES-1,0.2}" --stop-path --patience "${PATIENCE:-1,4}" \
      --configs "$SPEED_CONFIGS" --scores "${SCORES-gauss:8,gauss:4,diag:1,head_mean:1}" --out "$OUT/${NAME:-kernel-speed-${SHAPE:-gemma}-$CARD}.json" 2>&1 | tail -40 ;;
  capture)
    [ -f "$CAPTURE" ] || stop python3 -m s2o_eval capture --ctx 128k --allow-beyond-window --out "$CAPTURE" 2>&1 | tail -5 ;;
  s2o)  # S2O swept beside PBS (the strongest peer), the per-tile and per-segment oracles, FA2/cuDNN/FA3
    stop python3 -m s2o_eval bench --workload "$CAPTURE" --ctx ${CTX:-128k,32k} --allow-beyond-window --name "${NAME:-s2o-$CARD}" \
      --methods fa2,cudnn,fa3,s2o,s2o/walk,s2o/gauss,pbs,token_oracle,segment_oracle \
      --sweep s2o:tau=${TAUS:-0.0001,0.0003,0.001,0.003,0.01} --sweep pbs:threshold=0.8,0.9,0.95,0.99 \
      --method-args s2o/walk:dense_above=0 --sweep s2o/walk:tau=${TAUS:-0.0001,0.0003,0.001,0.003,0.01} \
      --method-args s2o/gauss:score=gauss,rank=8 --sweep s2o/gauss:tau=0.0003,0.001,0.003,0.01 \
      --sweep token_oracle:tau=0.001,0.003,0.01 --sweep segment_oracle:tau=0.001,0.003,0.01 \
      "${BENCH[@]}" 2>&1 | tail -80 ;;
  variants)  # S2O's planner choices, same run: the covariance term and its rank, shared lists, no patience
    stop python3 -m s2o_eval bench --workload "$CAPTURE" --ctx ${CTX:-128k,32k} --allow-beyond-window --name "${NAME:-s2o-variants-$CARD}" \
      --methods fa3,s2o,s2o/gauss,s2o/gauss4,s2o/v1,s2o/p1 \
      --sweep s2o:tau=0.001,0.003,0.01 \
      --method-args s2o/gauss:score=gauss,rank=8 --sweep s2o/gauss:tau=0.001,0.003,0.01 \
      --method-args s2o/gauss4:score=gauss,rank=4 --sweep s2o/gauss4:tau=0.001,0.003,0.01 \
      --method-args s2o/v1:score=mean,patience=1 --sweep s2o/v1:tau=0.0003,0.001,0.003 \
      --method-args s2o/p1:patience=1 --sweep s2o/p1:tau=0.0003,0.001,0.003 \
      "${BENCH[@]}" 2>&1 | tail -80 ;;
  peers)
    stop python3 -m s2o_eval bench --workload "$CAPTURE" --ctx ${CTX:-32k,128k} --allow-beyond-window --name "${NAME:-peers-$CARD}" \
      --methods fa2,cudnn,fa3,s2o,flexprefill,xattention,pbs,minference,flashprefill,skip_softmax,block_oracle \
      --sweep s2o:tau=0.0003,0.001,0.003,0.01 --sweep flexprefill:gamma=0.8,0.9,0.95,0.99 \
      --sweep flashprefill:alpha=0.05,0.12,0.2,0.3 --sweep skip_softmax:threshold=5,7,9,12 \
      --sweep xattention:threshold=0.8,0.9,0.95,0.99 --sweep pbs:threshold=0.8,0.9,0.95,0.99 \
      --sweep minference:budget_scale=0.25,0.5,1,2 --sweep block_oracle:threshold=0.8,0.9,0.95,0.99 \
      "${BENCH[@]}" 2>&1 | tail -80 ;;
  targets)  # one run per length (CTX=128k, then CTX=32k): S2O's tau sweep and its variants (the diagonal
    # score, segments of 512, patience 8), the walk at tau 0 (executor efficiency), the peers the targets
    # name, the segment oracle
    stop python3 -m s2o_eval bench --workload "$CAPTURE" --ctx ${CTX:-128k} --allow-beyond-window --name "${NAME:-targets-${CTX:-128k}-$CARD}" \
      --methods fa2,cudnn,fa3,s2o,s2o/diag,s2o/walk,s2o/s512,s2o/p8,pbs,skip_softmax,flashprefill,segment_oracle \
      --sweep s2o:tau=${TAUS:-0.0001,0.0003,0.001,0.003,0.01} --method-args s2o/walk:dense_above=0,tau=0 \
      --method-args s2o/diag:score=diag --sweep s2o/diag:tau=${TAUS:-0.0001,0.0003,0.001,0.003,0.01} \
      --method-args s2o/s512:segment=512 --sweep s2o/s512:tau=0.0003,0.001,0.003 \
      --method-args s2o/p8:patience=8 --sweep s2o/p8:tau=0.0003,0.001,0.003 \
      --sweep pbs:threshold=0.9,0.95,0.99,0.995 --sweep skip_softmax:threshold=3,5 \
      --sweep flashprefill:alpha=0.02,0.05 --sweep segment_oracle:tau=0.001,0.003,0.01 \
      "${BENCH[@]}" 2>&1 | tail -60 ;;
  combos)  # the default ranking (diag) with patience 6 and 8, and the one it replaced (head_mean), at both lengths
    stop python3 -m s2o_eval bench --workload "$CAPTURE" --ctx ${CTX:-128k,32k} --allow-beyond-window --name "${NAME:-combos-$CARD}" \
      --methods fa3,s2o,s2o/p6,s2o/p8,s2o/head_mean \
      --sweep s2o:tau=${TAUS:-0.0003,0.001,0.003,0.01} \
      --method-args s2o/p6:patience=6 --sweep s2o/p6:tau=0.001,0.003,0.01 \
      --method-args s2o/p8:patience=8 --sweep s2o/p8:tau=0.001,0.003,0.01 \
      --method-args s2o/head_mean:score=head_mean --sweep s2o/head_mean:tau=0.0003,0.001,0.003 \
      "${BENCH[@]}" 2>&1 | tail -40 ;;
  chunks)  # the attention of the last chunk of a chunked prefill (its queries at offset N - chunk), each method at
    # its tau sweep; the dense baselines through their own kernels with q_len < k_len
    stop python3 -m s2o_eval bench --workload "$CAPTURE" --ctx ${CTX:-128k,32k} --allow-beyond-window --prefill-chunk "${CHUNK:-8k}" \
      --name "${NAME:-chunks-$CARD}" --methods fa2,cudnn,fa3,s2o,pbs \
      --sweep s2o:tau=${TAUS:-0.0003,0.001,0.003,0.01} --sweep pbs:threshold=0.9,0.95,0.99,0.995 \
      "${BENCH[@]}" 2>&1 | tail -40 ;;
  random)
    stop python3 -m s2o_eval bench --workload llama8b-random --ctx 32k,128k --name "${NAME:-random-$CARD}" \
      --methods fa2,cudnn,fa3,s2o,s2o/walk,pbs --method-args s2o/walk:dense_above=0 "${BENCH[@]}" 2>&1 | tail -60 ;;
esac
