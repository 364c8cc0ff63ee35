"""Structured pruning (LLM-Pruner, magnitude groups, block removal) and the lm-eval bridge."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, OPTConfig, Qwen2Config

from eval.data import DataSource, calibration_windows, eval_tokens
from eval.models import load, save_compressed
from eval.perplexity import perplexity
from methods.core.base import build
from methods.pruning.block_drop import block_influence
from methods.core.apply import apply_method
from methods.core.calibration import TokenWindows
from methods.pruning.structure import struct_spec, unit_params, units


def _windows(tiny, data_root, n=8, seqlen=128):
    src = DataSource.from_config(data_root, offline=True)
    return calibration_windows("file", src, tiny.tokenizer, n, seqlen, 0, path="wikitext-2-tokens/valid.txt")


def _assert_coupled_shapes(model, family, head_dim):
    spec = struct_spec(family)
    for block in family.blocks(model):
        m = dict(block.named_modules())
        q, k, v, o = (m[n] for n in (spec.q, spec.k, spec.v, spec.o))
        assert k.out_features == v.out_features and k.out_features % head_dim == 0
        assert q.out_features == o.in_features and q.out_features % k.out_features == 0
        outs = {m[n].out_features for n in spec.mlp_up}
        assert outs == {m[spec.mlp_down].in_features}
        for attr in spec.head_attrs:
            assert getattr(block.get_submodule(spec.attn), attr) * head_dim == q.out_features


@pytest.mark.parametrize("importance", ["taylor", "magnitude"])
def test_llm_pruner_removes_coupled_groups_to_the_target(tiny_path, data_root, importance):
    lm = load(str(tiny_path))
    wins = _windows(lm, data_root)
    before = sum(p.numel() for p in lm.model.parameters())
    method = build("llm_pruner", ratio=0.2, importance=importance)
    block0 = lm.family.blocks(lm.model)[0]
    u = units(block0, struct_spec(lm.family), 64)
    head_p, chan_p = unit_params(block0, struct_spec(lm.family), u)
    model, _ = apply_method(method, lm.model, lm.family, TokenWindows(wins), torch.device("cpu"))
    after = sum(p.numel() for p in model.parameters())
    assert abs((before - after) - round(0.2 * before)) <= max(head_p, chan_p)  # within one group
    _assert_coupled_shapes(model, lm.family, 64)
    with torch.no_grad():
        out = model(input_ids=wins[:2]).logits
    assert torch.isfinite(out).all()


def test_magnitude_groups_keep_the_largest_units(tiny_path):
    lm = load(str(tiny_path))
    block = lm.family.blocks(lm.model)[2]
    spec = struct_spec(lm.family)
    m = dict(block.named_modules())
    chan = sum(m[n].weight.pow(2).sum(1) for n in spec.mlp_up) + m[spec.mlp_down].weight.pow(2).sum(0)
    heads = torch.stack([sum(m[n].weight[h * 64:(h + 1) * 64].pow(2).sum() for n in (spec.q, spec.k, spec.v))
                         + m[spec.o].weight[:, h * 64:(h + 1) * 64].pow(2).sum() for h in range(4)])
    down = m[spec.mlp_down].weight.detach().clone()
    method = build("llm_pruner", ratio=0.2, importance="magnitude")
    model, _ = apply_method(method, lm.model, lm.family, None, torch.device("cpu"))
    n_ch = 688 - dict(lm.family.blocks(model)[2].named_modules())[spec.mlp_down].in_features
    keep = torch.sort(torch.argsort(chan, descending=True)[: 688 - n_ch]).values
    new = dict(lm.family.blocks(model)[2].named_modules())
    assert torch.equal(new[spec.mlp_down].weight, down[:, keep])
    assert method.facts["heads_removed_per_layer"][2] == 1
    h = int(torch.argmin(heads))
    kept_q = torch.cat([m[spec.q].weight[i * 64:(i + 1) * 64] for i in range(4) if i != h])
    assert torch.equal(new[spec.q].weight, kept_q)


@pytest.mark.parametrize("config", [
    Qwen2Config(vocab_size=4096, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
                num_key_value_heads=2, max_position_embeddings=64),
    OPTConfig(vocab_size=4096, hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=64, word_embed_proj_dim=64),
], ids=["gqa", "opt"])
def test_structured_pruning_on_gqa_and_opt(config, tmp_path, tiny_path):
    """Random-initialised tiny configs: structure only."""
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_path / f, tmp_path / f)
    lm = load(str(tmp_path))
    head_dim = config.hidden_size // config.num_attention_heads
    method = build("llm_pruner", ratio=0.3, importance="magnitude", count_embeddings=False)
    model, _ = apply_method(method, lm.model, lm.family, None, torch.device("cpu"))
    _assert_coupled_shapes(model, lm.family, head_dim)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.randint(0, 4096, (2, 16))).logits).all()


def test_pruned_model_saves_and_reloads_with_its_new_shapes(tiny_path, data_root, tmp_path):
    lm = load(str(tiny_path))
    model, _ = apply_method(build("llm_pruner", ratio=0.2, importance="magnitude"), lm.model, lm.family, None,
                            torch.device("cpu"))
    save_compressed(model, lm.tokenizer, tmp_path / "pruned")
    assert json.loads((tmp_path / "pruned" / "compbench_shapes.json").read_text())["linears"]
    again = load(str(tmp_path / "pruned"))
    ids = torch.randint(0, 4096, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(again.model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert sum(p.numel() for p in again.model.parameters()) == sum(p.numel() for p in model.parameters())


def test_removing_an_identity_block_leaves_perplexity_unchanged(tiny_path, data_root):
    lm = load(str(tiny_path))
    block = lm.family.blocks(lm.model)[2]
    with torch.no_grad():  # no attention or MLP output: the block passes its input through
        block.self_attn.o_proj.weight.zero_()
        block.mlp.down_proj.weight.zero_()
    src = DataSource.from_config(data_root, offline=True)
    ids = eval_tokens("wikitext2", src, lm.tokenizer, 512)
    before = perplexity(lm.model, ids, 512, max_windows=20, progress=False)["ppl"]
    method = build("block_drop", n_blocks=1)
    model, _ = apply_method(method, lm.model, lm.family, TokenWindows(_windows(lm, data_root)), torch.device("cpu"))
    assert method.dropped == [2] and method.influence[2] == pytest.approx(0.0, abs=1e-6)
    assert len(lm.family.blocks(model)) == 3 and model.config.num_hidden_layers == 3
    assert perplexity(model, ids, 512, max_windows=20, progress=False)["ppl"] == pytest.approx(before, rel=1e-5)


def test_block_influence_is_one_minus_cosine():
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    y = torch.tensor([[[1.0, 1.0], [0.0, 3.0]]])
    assert block_influence(x, y) == pytest.approx(1 - (2 ** -0.5 + 1) / 2)


def test_structured_pruning_refuses_unknown_families(make_config, tmp_path):
    from transformers import GPTNeoXConfig

    from eval.pipeline import ConfigError, plan
    AutoModelForCausalLM.from_config(GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=64)).save_pretrained(
        tmp_path, safe_serialization=True)
    with pytest.raises(ConfigError, match=r"structured pruning knows .*'llama', 'opt'.* not 'gpt_neox'"):
        plan(make_config(method="llm_pruner", **{"model.path": str(tmp_path)}))


@pytest.mark.e2e
def test_llm_pruner_prunes_gpt2_through_its_unfused_attention(make_config, tmp_path, tiny_path):
    from transformers import GPT2Config

    from eval.pipeline import run
    AutoModelForCausalLM.from_config(GPT2Config(vocab_size=4096, n_embd=64, n_layer=2, n_head=4,
                                                n_positions=128)).save_pretrained(tmp_path, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_path / f, tmp_path / f)
    rec = run(make_config(method="llm_pruner", **{"model.path": str(tmp_path), "model.seqlen": 64,
                                                 "calib.nsamples": 4, "eval.max_windows": 4}))
    comp = rec["compression"]
    assert comp["params_after"] < comp["params_before"] and comp["kind"] == "structured"


# --- lm-eval bridge ---------------------------------------------------------------------------

TASK_YAML = """task: compbench_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
"""


@pytest.mark.e2e
def test_lm_eval_bridge_scores_a_local_task_like_a_direct_computation(tiny, data_root, tmp_path):
    from eval.zeroshot import zeroshot

    text = (data_root / "wikitext-2-tokens/valid.txt").read_text().split()
    docs = []
    for i in range(12):
        start = 500 + 40 * i
        context = " ".join(text[start:start + 20])
        true, other = " ".join(text[start + 20:start + 24]), " ".join(text[9000 + 7 * i:9004 + 7 * i])
        label = i % 2
        docs.append({"context": context, "choices": [other, true] if label else [true, other], "label": label})
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (tmp_path / "task.yaml").write_text(TASK_YAML.format(data=tmp_path / "data.jsonl"))

    def loglik(context, cont):
        ctx = tiny.tokenizer(context).input_ids
        full = tiny.tokenizer(context + cont).input_ids
        ids = torch.tensor([full])
        with torch.no_grad():
            logp = torch.log_softmax(tiny.model(input_ids=ids).logits[0, :-1].float(), -1)
        return float(sum(logp[t - 1, full[t]] for t in range(len(ctx), len(full))))

    # lm-eval joins context and choice with its default target delimiter " "
    expected = sum(max(range(2), key=lambda c: loglik(d["context"], " " + d["choices"][c])) == d["label"]
                   for d in docs) / 12
    res = zeroshot(tiny.model, tiny.tokenizer, ["compbench_local_mc"], batch_size=4, include_path=str(tmp_path))
    assert res["compbench_local_mc"]["acc"] == pytest.approx(expected)
    assert expected > 0.5  # the trained model prefers the true continuation


def test_offline_standard_tasks_fail_plainly(make_config):
    from eval.pipeline import ConfigError, plan
    with pytest.raises(ConfigError, match=r"need lm-eval to download their datasets.*include_path"):
        plan(make_config(**{"eval.zeroshot.tasks": "[boolq]"}))


@pytest.mark.e2e
def test_taylor_beats_magnitude_groups_and_table3_gets_structured_rows(shared_results):
    from conftest import DECODER, base_config
    from eval.records import RecordStore
    from eval.pipeline import run
    from tables.build import TABLES, build_table

    results = shared_results     # the dense record of the shared decoder settings
    taylor = run(base_config(results, method="llm_pruner", **DECODER))
    magnitude = run(base_config(results, method="struct_magnitude", **DECODER))
    dropped = run(base_config(results, method="block_drop", **DECODER))
    ppl = lambda r: r["metrics"]["wikitext2"]["ppl"]  # noqa: E731
    dense = RecordStore(results).load(taylor["dense_id"])
    assert dense["metrics"]["wikitext2"]["windows"] == DECODER["eval.max_windows"]
    assert ppl(dense) < ppl(taylor) < ppl(magnitude)
    assert taylor["compression"]["comp_rate"] == pytest.approx(0.2, abs=0.001)
    assert taylor["compression"]["comp_rate_no_embeddings"] > taylor["compression"]["comp_rate"]
    assert dropped["compression"]["params_after"] < dropped["compression"]["params_before"]
    table = build_table(TABLES["table3"], [taylor, magnitude, dropped, dense], include_partial=True)
    repro = table[table["source"] == "reproduced"].set_index("method")
    assert repro.loc["LLM-Pruner", "granularity"] == "N,H"
    assert repro.loc["Magnitude (N,H)", "ppl_compressed"] == pytest.approx(ppl(magnitude))
    assert repro.loc["Block drop (BI)", "granularity"] == "L"
    # physically smaller decoders get a measured speedup (dense over pruned forward time, same process)
    for rec, label in ((taylor, "LLM-Pruner"), (dropped, "Block drop (BI)")):
        s = rec["speedup"]   # per-pass ratios of a dense copy and the pruned model, interleaved
        assert s["ratios"] == pytest.approx([d / c for d, c in zip(s["dense_s"], s["compressed_s"])])
        assert s["q1"] <= s["median"] <= s["q3"] and s["repeats"] == 3
        assert s["dtype"] == s["dense_dtype"] == "float32"
        assert repro.loc[label, "speedup"] == round(rec["speedup"]["median"], 2) > 0
    # the whole compression phase is timed under its own name, its parts under theirs
    assert taylor["timing"]["compress_s"] > 0 and taylor["timing"]["total_s"] > taylor["timing"]["compress_s"]
