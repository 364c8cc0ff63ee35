"""Real linear shapes (out_features, in_features) of the survey's large models (the model under
test's own: scripts/bench_kernels.py's `model_shapes`)."""
from __future__ import annotations

# Llama: q/k/v/o, gate/up, down (k/v narrower under grouped-query attention); OPT: q/k/v/o, fc1, fc2
LARGE: dict[str, list[tuple[int, int]]] = {
    "llama-7b": [(4096, 4096), (11008, 4096), (4096, 11008)],
    "llama-13b": [(5120, 5120), (13824, 5120), (5120, 13824)],
    "llama-70b": [(8192, 8192), (1024, 8192), (28672, 8192), (8192, 28672)],
    "opt-66b": [(9216, 9216), (36864, 9216), (9216, 36864)],
    "opt-175b": [(12288, 12288), (49152, 12288), (12288, 49152)],
}
