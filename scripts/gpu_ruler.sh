#!/usr/bin/env bash
# How the RULER reports and the nightly baseline are made on the lent H100, one device call per step
# (each under its 10 minutes; every step resumes what an interrupted call left, so repeat it until done):
#
#   bash scripts/gpu_ruler.sh dense     # fa2 and fa3, 11 synthetic tasks x 4K..32K x 10 samples
#   bash scripts/gpu_ruler.sh sweep     # s2o at each tau of $TAUS (largest first) until one passes
#   bash scripts/gpu_ruler.sh nightly   # choose tau from the sweep; nightly run + baseline with it
#   bash scripts/gpu_ruler.sh suites    # LongBench-v2 / InfiniteBench on fixture data at 16K
#   bash scripts/gpu_ruler.sh scale N   # on a multi-GPU host: one RULER selection with --gpus N
#                                             # (run it with 1, then 2); the scale report once both exist
#   bash scripts/gpu_ruler.sh chunked   # issue 24: RULER at 32K with s2o, whole prompts and 8K chunks (the same
#                                             # samples); one report, chunked beside whole
#   bash scripts/gpu_ruler.sh rope      # issue 16: fa2, RULER niah + vt, cwe, fwe x 32K..128K x 10 samples,
#                                             # RoPE linear:F on the global layers for F in $FS (1 2 4);
#                                             # one report (score vs ctx, a line per F) once two F have samples
#
# Run directories live in $RUNS (default /tmp/runs, kept while the machine is warm); each step tars
# them into $OUT/runs.tgz. Copy that file to .runs/runs.tgz and carry `.runs` to resume on a fresh machine.
set -u
. scripts/gpu_setup.sh
R=${RUNS:-/tmp/runs}
mkdir -p "$R" "$OUT"
# A fresh machine resumes from the run directories an earlier machine sent back: carry their tar (the
# runs.tgz a step leaves under $OUT, kept here as .runs/runs.tgz); samples already on this machine win.
if [ -f .runs/runs.tgz ]; then tar xzf .runs/runs.tgz -C "$(dirname "$R")" --skip-old-files; fi
RULER="--task ruler --ctx 4k,8k,16k,32k --limit 10 --decode static -q"
ROPE_TASKS="ruler:niah_single_1,niah_single_2,niah_single_3,niah_multikey_1,niah_multikey_2,niah_multikey_3,niah_multivalue,niah_multiquery,vt,cwe,fwe"
deadline=$((SECONDS + ${LIMIT_S:-520}))  # the whole step ends by then: a device call has 600 s
stop() {
  local left=$((deadline - SECONDS))
  [ "$left" -gt 30 ] || { echo "out of time for: $*"; return 124; }
  timeout -k 15 -s INT "$left" "$@"
}

chosen_tau() {  # the compare issue's rule, over the sweep's runs against fa2
  python3 - "$R" <<'PY'
import glob, sys
from pathlib import Path
from s2o_eval.reporting.runs import load_runs
from s2o_eval.reporting.sweep import evaluate_sweep
root = sys.argv[1]
fa2 = [p for p in glob.glob(f"{root}/gemma-3-270m-fa2-*")]
runs = load_runs([fa2[0], *sorted(glob.glob(f"{root}/s2o-sweep/*"))], Path(root))
sweep = evaluate_sweep(runs[0], runs[1:], "tau")
for p in sweep.points:
    print(p, file=sys.stderr)
print(sweep.chosen.value if sweep.chosen else "")
PY
}

case "${1:?step: dense, sweep, nightly, suites, scale, chunked or rope}" in
  dense) stop python3 -m s2o_eval run $RULER --method fa2,fa3 --runs-dir "$R" 2>&1 | tail -3 ;;
  sweep)  # largest first; the first tau that passes is the largest that does: stop there
    for tau in ${TAUS:-0.003 0.001 0.0003}; do
      stop python3 -m s2o_eval run $RULER --method s2o --method-args "tau=$tau" --out "$R/s2o-sweep/tau$tau" 2>&1 | tail -2
      [ -n "$(chosen_tau)" ] && break
    done ;;
  nightly)
    tau=$(chosen_tau); echo "chosen tau: ${tau:-none}"
    [ -n "$tau" ] || exit 1
    stop python3 -m s2o_eval run --suite nightly --method s2o --method-args "tau=$tau" --decode static \
      --out "$R/nightly-s2o" -q 2>&1 | tail -3
    python3 -m s2o_eval regress "$R/nightly-s2o" --against "$OUT/nightly-gemma3-270m-h100.json" --update ;;
  scale)  # each N into a fresh run directory: a session timed as one piece
    n=${2:?scale N: the number of GPUs}
    rm -rf "$R/scale-$n"
    stop python3 -m s2o_eval run --task ruler --ctx ${CTX:-8k} --limit ${LIMIT:-20} --method fa2 --decode static -q \
      --gpus "$n" --out "$R/scale-$n" 2>&1 | tail -3
    ls -d "$R"/scale-* >/dev/null 2>&1 && [ "$(ls -d "$R"/scale-* | wc -l)" -ge 2 ] \
      && python3 -m s2o_eval scale "$R"/scale-* --out "$OUT/scale" ;;
  rope)  # one run directory per F, each over all three lengths (a shorter list would be another run);
         # 64K and 128K are past gemma-3-270m's 32K window for every F: interpolation does not lift the
         # check, so --allow-beyond-window for all three (F = 1 is the model's own RoPE: no flag)
    for f in ${FS:-1 2 4}; do
      scaling=(); [ "$f" = 1 ] || scaling=(--rope-scaling "linear:$f")
      stop python3 -m s2o_eval run --task "$ROPE_TASKS" --ctx 32k,64k,128k --limit 10 --method fa2 --decode static \
        --allow-beyond-window "${scaling[@]}" --out "$R/rope/linear$f" -q 2>&1 | tail -3
    done
    started=$(ls -d "$R"/rope/linear*/samples.jsonl 2>/dev/null | xargs -r -n1 dirname)  # F = 1 first: the baseline
    [ "$(echo "$started" | grep -c .)" -ge 2 ] && python3 -m s2o_eval compare $started --out "$OUT/rope-ruler" ;;
  chunked)
    for chunk in 0 ${CHUNK:-8k}; do
      stop python3 -m s2o_eval run --task ruler --ctx 32k --limit ${LIMIT:-10} --method s2o --decode static \
        --prefill-chunk "$chunk" --out "$R/chunked/s2o-$chunk" -q 2>&1 | tail -3
    done
    [ -f "$R/chunked/s2o-0/samples.jsonl" ] && [ -f "$R/chunked/s2o-${CHUNK:-8k}/samples.jsonl" ] \
      && python3 -m s2o_eval compare "$R/chunked/s2o-0" "$R/chunked/s2o-${CHUNK:-8k}" --out "$OUT/ruler-chunked" ;;
  suites)
    tau=${TAU:-$(chosen_tau)}
    python3 -c "import sys; sys.path.insert(0, 'tests'); import suite_fixtures as f; f.write('/tmp/fixtures', scale=8)"
    for m in fa2 s2o; do
      args=(); [ "$m" = s2o ] && args=(--method-args "tau=$tau")
      stop python3 -m s2o_eval run --task longbench-v2 --task infinitebench --ctx 16k --limit 3 \
        --data-dir /tmp/fixtures --method "$m" "${args[@]}" --decode static --out "$R/fixtures-$m" -q 2>&1 | tail -4
    done ;;
esac
tar czf "$OUT/runs.tgz" -C "$(dirname "$R")" "$(basename "$R")"
