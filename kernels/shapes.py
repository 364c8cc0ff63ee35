"""Real linear shapes (out_features, in_features): the survey's large models, and the model
under test read from its own config (built on the meta device: no weights are loaded)."""
from __future__ import annotations

import torch

# Llama: q/k/v/o, gate/up, down (k/v narrower under grouped-query attention); OPT: q/k/v/o, fc1, fc2
LARGE: dict[str, list[tuple[int, int]]] = {
    "llama-7b": [(4096, 4096), (11008, 4096), (4096, 11008)],
    "llama-13b": [(5120, 5120), (13824, 5120), (5120, 13824)],
    "llama-70b": [(8192, 8192), (1024, 8192), (28672, 8192), (8192, 28672)],
    "opt-66b": [(9216, 9216), (36864, 9216), (9216, 36864)],
    "opt-175b": [(12288, 12288), (49152, 12288), (12288, 49152)],
}


def model_shapes(path: str) -> list[tuple[int, int]]:
    """The distinct shapes of the compressible linears of one block of the model at `path`."""
    from transformers import AutoConfig, AutoModel

    from eval.models import resolve_source
    from methods.core.arch import family_of, weight_matrix

    config = AutoConfig.from_pretrained(resolve_source(path))
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    family = family_of(config.model_type)
    try:
        blocks = family.blocks(model)
    except ValueError:   # a bare AutoModel lacks the task wrapper's prefix (model.layers -> layers)
        blocks = next(m for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList))
    shapes = [tuple(weight_matrix(m).shape) for m in family.linears(blocks[0]).values()]
    return list(dict.fromkeys(shapes))
