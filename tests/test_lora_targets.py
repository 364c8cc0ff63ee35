"""The one home of LoRA's target choice and adaptor count (methods/core/adaptors.py), and the
methods that attach adaptors through it: LoRA and AdaLoRA (the family's targets, or `targets`),
QLoRA and INT2.1 (every block linear)."""
from __future__ import annotations

import pytest

from tiny_encoders import tiny_bert

LLAMA_LINEARS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_lora_targets_are_the_familys_unless_set_or_every_linear_is_asked():
    from methods.core.adaptors import lora_targets
    from methods.core.arch import FAMILIES
    bert, model = FAMILIES["bert"], tiny_bert()
    assert lora_targets(bert, model) == ["query", "value"]
    assert lora_targets(bert, model, ["key"]) == ["key"]
    assert lora_targets(bert, model, ["key"], every_linear=True) == ["key"]
    assert lora_targets(bert, model, every_linear=True) == ["dense", "key", "query", "value"]


def test_llama_has_no_default_targets_but_every_linear_covers_its_blocks(tiny):
    from methods.core.adaptors import lora_targets
    assert lora_targets(tiny.family, tiny.model) == []
    assert lora_targets(tiny.family, tiny.model, every_linear=True) == LLAMA_LINEARS


@pytest.mark.parametrize("name", ["lora", "adalora"])
def test_adaptor_methods_take_their_targets_from_the_shared_choice(name):
    from methods.core.arch import FAMILIES
    from methods.core.base import build
    model = tiny_bert()
    assert build(name).peft_config(model, FAMILIES["bert"], 10).target_modules == {"query", "value"}
    assert build(name, targets=["key"]).peft_config(model, FAMILIES["bert"], 10).target_modules == {"key"}


@pytest.mark.parametrize("name", ["qlora", "int21"])
def test_adaptor_quantization_puts_lora_on_every_block_linear_and_counts_it_once(tiny, name):
    import copy

    from methods.core.adaptors import lora_params
    from methods.core.base import build
    peft_model = build(name, r=2).attach(copy.deepcopy(tiny.model).float(), tiny.family)
    assert sorted(peft_model.peft_config["default"].target_modules) == LLAMA_LINEARS
    blocks = tiny.family.blocks(peft_model.base_model.model)
    expected = sum(2 * (layer.in_features + layer.out_features)
                   for block in blocks for layer in tiny.family.linears(block).values())
    assert lora_params(peft_model) == expected


def test_both_method_families_count_adaptors_with_the_one_lora_params():
    from methods.adaptors import peft_adaptors
    from methods.core import adaptors
    from methods.quantization.trained import adapted
    assert peft_adaptors.lora_params is adaptors.lora_params is adapted.lora_params
