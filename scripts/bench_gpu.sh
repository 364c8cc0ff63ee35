#!/usr/bin/env bash
# Everything the GPU benchmarks measure, in one command, under 10 minutes on one H100/H200:
#     scripts/bench_gpu.sh [OUT_DIR]
# 1. kernels: every kernel format per layer at Llama-7B/13B/70B shapes against dense bf16, each
#    shape routed to its fastest kernel (the figure names it), then end to end: the tiny models
#    and a random-weight Llama-7B converted by kernels.convert  -> OUT_DIR/kernels-<gpu>.json
# 2. scale: the random-weight Llama-7B, 128 x 2048 calibration tokens: SparseGPT, Wanda, GPTQ and AWQ
#    compress wall time and peak memory against replays of the reference procedures (first
#    $SCALE_BLOCKS blocks), and perplexity-protocol throughput against one window per forward
#                                                               -> OUT_DIR/scale-<gpu>.json
# Each part runs under its own time limit, and each case inside it records its own error, so one
# failure costs one figure. Without a package index, first run scripts/gpu_wheels.sh where there
# is one and bring .whl/ along: they are installed from it here.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-results/bench}
KERNELS_S=${KERNELS_S:-330}
SCALE_S=${SCALE_S:-200}
SCALE_BLOCKS=${SCALE_BLOCKS:-2}
# a CPU check of this script: DEVICE=cpu PROFILE=smoke SCALE_MODEL=bench.synthetic=null (the tiny Llama)
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-gpu}
SCALE_MODEL=${SCALE_MODEL:-bench.synthetic=llama-7b}
KERNELS_ARGS=${KERNELS_ARGS:-}
SCALE_METHODS=${SCALE_METHODS:-sparsegpt,wanda,gptq,awq}
SCALE_ARGS=${SCALE_ARGS:-}
EVAL_WINDOWS=${EVAL_WINDOWS:-16}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/compbench-site .whl/*.whl \
    && export PYTHONPATH=/tmp/compbench-site${PYTHONPATH:+:$PYTHONPATH}
fi
SLUG=$($PY -c "import re, torch; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name(0).lower()).strip('-')
                if '$DEVICE' == 'cuda' else '$DEVICE')") || exit 1
mkdir -p "$OUT_DIR"
status=0
timeout "$KERNELS_S" $PY scripts/bench_kernels.py profile="$PROFILE" device="$DEVICE" out="$OUT_DIR/kernels-$SLUG.json" $KERNELS_ARGS \
  || { echo "kernels: failed or out of time" >&2; status=1; }
timeout "$SCALE_S" $PY scripts/bench_speed.py device="$DEVICE" "$SCALE_MODEL" "bench.methods=[$SCALE_METHODS]" \
  bench.layers="$SCALE_BLOCKS" bench.eval_windows="$EVAL_WINDOWS" bench.out="$OUT_DIR/scale-$SLUG.json" $SCALE_ARGS \
  || { echo "scale: failed or out of time" >&2; status=1; }
exit $status
