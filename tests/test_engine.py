"""The sequential driver: block-by-block forwards reproduce the model; batching changes nothing."""
from __future__ import annotations

import torch

from eval.data import DataSource, calibration_windows
from conftest import real_layer_inputs
from methods.core.engine import Session
from methods.core.calibration import TokenWindows
from methods.core.stats import HESSIAN, ACT_SQ


def _windows(tiny, data_root, n=6, seqlen=64):
    src = DataSource.from_config(data_root, offline=True)
    return calibration_windows("file", src, tiny.tokenizer, n, seqlen, 0, path="wikitext-2-tokens/valid.txt")


def test_block_walk_reproduces_the_model_forward(tiny, data_root):
    wins = _windows(tiny, data_root)
    session = Session(tiny.model, tiny.family, torch.device("cpu"), progress=False)
    session.capture(TokenWindows(wins), batch_size=4)  # batches of 4 and 2
    assert [h.shape[0] for h, _ in session.inputs] == [4, 2]
    last = []
    session.walk(lambda i, block, inputs: last.append(session.forward_block(block, inputs))
                 if i == len(session.blocks) - 1 else None, desc="test")
    hidden = torch.cat([h for h, _ in last[0]])
    with torch.inference_mode():
        ref = tiny.model(input_ids=wins, output_hidden_states=True).hidden_states
    # hidden_states[-1] has the final norm applied; compare its pre-norm input via the norm
    torch.testing.assert_close(tiny.model.model.norm(hidden), ref[-1], rtol=1e-4, atol=1e-4)


def test_batched_statistics_equal_one_sample_at_a_time(tiny, data_root):
    """The reference code feeds one calibration sample per forward; batching must not change H."""
    wins = _windows(tiny, data_root)
    block = tiny.family.blocks(tiny.model)[1]
    layers = {"mlp.down_proj": tiny.family.linears(block)["mlp.down_proj"]}
    found = {}
    for bs in (1, 6):
        session = Session(tiny.model, tiny.family, torch.device("cpu"), progress=False)
        session.capture(TokenWindows(wins), batch_size=bs)
        inputs = session.forward_block(tiny.family.blocks(tiny.model)[0], session.inputs)
        found[bs] = session.gather(block, layers, frozenset({HESSIAN, ACT_SQ}), inputs)["mlp.down_proj"]
    assert found[1].nsamples == found[6].nsamples == 6
    torch.testing.assert_close(found[1].hessian, found[6].hessian, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(found[1].act_sq, found[6].act_sq, rtol=1e-4, atol=1e-4)


def test_shared_inputs_share_statistics_and_match_separate_sums(tiny, data_root):
    wins = _windows(tiny, data_root, n=4)
    session = Session(tiny.model, tiny.family, torch.device("cpu"), progress=False)
    session.capture(TokenWindows(wins), batch_size=2)
    block = tiny.family.blocks(tiny.model)[0]
    linears = tiny.family.linears(block)
    found = session.gather(block, linears, frozenset({HESSIAN}), session.inputs)
    assert found["self_attn.q_proj"] is found["self_attn.k_proj"] is found["self_attn.v_proj"]
    assert found["mlp.gate_proj"] is found["mlp.up_proj"]
    assert found["self_attn.o_proj"] is not found["self_attn.q_proj"]
    for name, (_, x) in real_layer_inputs(tiny, 0, ["self_attn.k_proj", "mlp.down_proj"], nsamples=4,
                                          seqlen=64).items():
        torch.testing.assert_close(found[name].hessian, 2 / 4 * x.t() @ x, rtol=1e-4, atol=1e-3)
