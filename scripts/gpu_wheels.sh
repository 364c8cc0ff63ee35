#!/usr/bin/env bash
# The wheels a GPU machine without a package index needs, built here into .whl/ (git-ignored):
#     scripts/gpu_wheels.sh [DIR]
# The `gpu` extra (pyproject.toml: GemLite) and the project's packages that a CUDA image with
# PyTorch usually lacks (Hydra and its parser). All are pure Python (py3-none-any), so a wheel
# built here installs on the GPU machine's Python too; scripts/bench_gpu.sh installs them from
# DIR with --no-index before it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
mkdir -p "$DIR"
PY=${PY:-python3}
gpu_extra=$($PY -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"]))')
pins=$($PY -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; print(" ".join(p for p in d if p.split("==")[0] in ("hydra-core", "omegaconf")))')
$PY -m pip wheel -q --no-deps -w "$DIR" $gpu_extra $pins "antlr4-python3-runtime==4.9.3"
ls -1 "$DIR"
