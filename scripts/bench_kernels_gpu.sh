#!/usr/bin/env bash
# The whole GPU kernel benchmark in one command, under 10 minutes on one H100/H200:
#     scripts/bench_kernels_gpu.sh [OUT_DIR] [hydra overrides...]
# writes OUT_DIR/kernels-<gpu>.json (default results/bench/), which the tables' Speedup cells read.
# Needs the project's packages (pip install -e ".[dev]"; CUDA builds of torch ship Triton).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-results/bench}
shift || true
SLUG=$(python -c 'import re, torch; print(re.sub("[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-"))')
python scripts/bench_kernels.py profile=gpu device=cuda out="$OUT_DIR/kernels-$SLUG.json" "$@"
