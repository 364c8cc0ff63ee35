"""A newcomer's model family, kept beside the tests (a real one is an entry of FAMILIES in
methods/core/arch.py): Microsoft's Phi blocks (parallel attention and MLP after one LayerNorm)."""
from __future__ import annotations

from methods.core.arch import Family, Structure, register_family

PHI = register_family(Family(
    "phi", ("phi",), "model.layers",
    (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.dense",), ("mlp.fc1",), ("mlp.fc2",)),
    (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.fc1")),),
    structure=Structure("self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense",
                        ("mlp.fc1",), "mlp.fc2"),
    mlp=("mlp.fc1", "mlp.fc2")))
