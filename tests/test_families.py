"""Every supported family runs through the engine: block inputs match the model's own forward,
and N:M patterns land on the input dimension (GPT-2's Conv1D stores weights transposed).
The models are tiny random-initialised configs: structure only, no figures come from them."""
from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, BloomConfig, GPT2Config, GPTNeoXConfig, OPTConfig, Qwen2Config

from eval.models import load
from methods.core import engine
from methods.core.apply import apply_method
from methods.core.model_facts import measure
from methods.core.calibration import TokenWindows
from methods.core.arch import weight_matrix
from methods.core.base import build

CONFIGS = {
    "opt": OPTConfig(vocab_size=4096, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                     max_position_embeddings=128, word_embed_proj_dim=64),
    "gpt2": GPT2Config(vocab_size=4096, n_embd=64, n_layer=2, n_head=4, n_positions=128),
    "gpt_neox": GPTNeoXConfig(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=128),
    "bloom": BloomConfig(vocab_size=4096, hidden_size=64, n_layer=2, n_head=4),
    "qwen2": Qwen2Config(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128),
}


@pytest.fixture(params=sorted(CONFIGS))
def family_model(request, tmp_path, tiny_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[request.param])
    model.save_pretrained(tmp_path, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_path / name, tmp_path / name)
    return load(str(tmp_path))


def test_block_inputs_match_model_hidden_states(family_model):
    lm = family_model
    wins = torch.randint(0, 4096, (3, 32))
    with torch.inference_mode():
        ref = lm.model(input_ids=wins, output_hidden_states=True).hidden_states
    session = engine.Session(lm.model, lm.family, torch.device("cpu"), progress=False)
    session.capture(TokenWindows(wins), batch_size=2)
    seen = {}
    session.walk(lambda i, block, inputs: seen.__setitem__(i, torch.cat([h for h, _ in inputs])), desc="t")
    for i in range(len(session.blocks)):
        torch.testing.assert_close(seen[i], ref[i], rtol=1e-4, atol=1e-4)


def test_sparsegpt_nm_on_every_family(family_model):
    lm = family_model
    apply_method(build("sparsegpt", sparsity="2:4"), lm.model, lm.family, TokenWindows(torch.randint(0, 4096, (4, 32))),
                 torch.device("cpu"), progress=False)
    for block in lm.family.blocks(lm.model):
        for name, layer in lm.family.linears(block).items():
            w = weight_matrix(layer)
            assert torch.all((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) == 2), name
    assert measure(lm.model, lm.family).linear_sparsity == pytest.approx(0.5)


@pytest.mark.parametrize("config", ["bert", "deberta-v2"])
def test_a_perplexity_task_refuses_every_encoder_family_by_its_role(config, make_config, tmp_path):
    """The family's role decides, not its name: DeBERTa-v2 is refused like BERT."""
    from transformers import AutoConfig

    from eval.tasks.base import build_task
    from methods.core.arch import FAMILIES
    AutoConfig.for_model(config, vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64).save_pretrained(tmp_path / "encoder")
    task = build_task(make_config(**{"model.path": str(tmp_path / "encoder")}))
    with pytest.raises(ValueError, match="is an encoder .* perplexity runs need a causal LM"):
        task.prepare()
    assert {f.name for f in FAMILIES.values() if f.role == "encoder"} == {"bert", "deberta_v2"}


def test_every_family_names_its_mlp_and_its_structure_among_its_block_linears():
    """What methods ask a family (its MLP linears, its coupled structure) names linears it has."""
    from methods.core.arch import FAMILIES
    for fam in FAMILIES.values():
        linears = {n for group in fam.sequential for n in group}
        assert fam.mlp and set(fam.mlp) <= linears, fam.name
        if fam.structure is not None and not fam.fused_qkv:   # GPT-2's q, k, v exist once unfused
            s = fam.structure
            assert {s.q, s.k, s.v, s.o, *s.mlp_up, s.mlp_down} <= linears, fam.name
