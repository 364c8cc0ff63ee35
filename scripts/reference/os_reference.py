"""Run the Outlier Suppression reference code (wimh966/outlier_suppression) stage by stage on inputs
dumped by `os_compare.py dump`, in the reference's own environment (transformers 4.25; see
scripts/reference/README.md). Nothing here imports compbench; the reference is imported from its
checkout (`--ref-src`, the repository root), not copied.

It follows `ptq_qa_quant.main` with the SQuAD config of `exp/bert_ptq/twc_fine_gamma/squad_v1`:
full-precision outputs, `delay_ln` (Gamma Migration), weight observers on the first batch,
`token_wise_clipping` (coarse), `learn_scale` (LSQ+, batches of 8), then every quantizer on.

    .refenv/bin/python scripts/reference/os_reference.py --ref-src /tmp/outlier_suppression \
        --inputs /tmp/os/inputs.pt --out /tmp/os/reference.pt
"""
from __future__ import annotations


import torch
from refenv import reference_args


def qconfig(bits: int):
    from easydict import EasyDict
    return EasyDict({
        "is_remove_padding": True, "ln": {"delay": True},
        "a_qconfig": {"quantizer": "LSQPlusFakeQuantize", "observer": "AvgPruneMinMaxObserver", "bit": bits,
                      "symmetric": False, "ch_axis": -1},
        "w_qconfig": {"quantizer": "FixedFakeQuantize", "observer": "MinMaxObserver", "bit": bits,
                      "symmetric": True, "ch_axis": 0},
        "calibrate": 256})


def act_qparams(model) -> dict[str, tuple[float, float]]:
    from quant_transformer.quantization.fake_quant import QuantizeBase
    return {n: (float(m.scale), float(m.zero_point)) for n, m in model.named_modules()
            if isinstance(m, QuantizeBase) and "act" in n}


def main() -> None:
    args = reference_args()
    from easydict import EasyDict
    from transformers import AutoModelForQuestionAnswering

    from quant_transformer.quantization.state import disable_all, enable_calibration_woquantization, \
        enable_quantization, set_observer_name
    from quant_transformer.solver import gamma_migration, token_wise_clipping
    from quant_transformer.solver.quant_model import quantize_model

    inp = torch.load(args.inputs)
    torch.manual_seed(inp["seed"])
    fp_model = AutoModelForQuestionAnswering.from_pretrained(inp["teacher"]).eval()
    config = EasyDict({"quant": qconfig(inp["abits"]), "model": {},
                       "data": {"dataset_name": "squad", "max_seq_length": inp["seq_len"]}})
    model = quantize_model(fp_model, config)

    def prepare(batches):                       # the reference's prepare_input_output
        disable_all(model)
        fp_input, fp_output = [], []
        with torch.no_grad():
            for b in batches:
                out = model(**b)
                keep = b["attention_mask"] == 1
                fp_input.append(b)
                fp_output.append([out[0][keep].detach(), out[1][keep].detach()])
        return fp_input, fp_output

    search = [dict(b) for b in inp["search"]]
    fp_input, fp_output = prepare(search)
    model = gamma_migration.delay_ln(model, config.quant, config.model)

    # Gamma Migration: the non-scaling LayerNorm outputs x' on the first sequences, in full precision
    split = {}
    hooks = [m.register_forward_pre_hook(lambda _m, a, n=n: split.__setitem__(n, a[0][:4].clone()))
             for n, m in model.named_modules() if n.endswith("layernorm_post_act_fake_quantize")]
    disable_all(model)
    with torch.no_grad():
        migrated_out = model(**fp_input[0])
    for h in hooks:
        h.remove()

    enable_calibration_woquantization(model, quantizer_type="weight_fake_quant")
    with torch.no_grad():
        model(**fp_input[0])
    disable_all(model)
    set_observer_name(model)

    losses = []                                 # what find_ratio logs, kept
    calibrate = token_wise_clipping.calibrate

    def recorded(m, fi, fo=None):
        loss = calibrate(m, fi, fo)
        if fo is not None:
            losses.append(float(loss))
        return loss
    token_wise_clipping.calibrate = recorded
    trainer = EasyDict({"model": model, "args": EasyDict({"per_device_eval_batch_size": len(search[0]["input_ids"])})})
    token_wise_clipping.token_wise_clipping(trainer, fp_input, fp_output, config)
    coarse = act_qparams(model)
    ratio = 1.0 - float(torch.tensor(losses).argmin()) * _step(config, len(search[0]["input_ids"]))

    learn_input, learn_output = prepare([dict(b) for b in inp["learn"]])
    token_wise_clipping.learn_scale(trainer, learn_input, learn_output,
                                    {"lr": inp["learn_lr"], "epoch": inp["learn_epochs"]})
    enable_quantization(model)
    with torch.no_grad():
        out = model(**fp_input[0])
    learnt = act_qparams(model)
    weights = {n: m.weight_fake_quant(m.weight).detach().clone() for n, m in model.named_modules()
               if hasattr(m, "weight_fake_quant")}
    torch.save({"split_ln": split, "migrated_start_logits": migrated_out[0][:4].clone(), "coarse_losses": losses,
                "ratio": ratio, "coarse": coarse, "learnt": learnt, "weights": weights,
                "start_logits": out[0].detach(), "end_logits": out[1].detach()}, args.out)
    print(f"wrote {args.out}: ratio {ratio:.4f}, {len(losses)} coarse losses, {len(learnt)} activation quantizers")


def _step(config, batch_size: int) -> float:
    from quant_transformer.solver.token_wise_clipping import cac_step_iters
    return cac_step_iters(config.quant.a_qconfig.bit, batch_size, config.data)[0]


if __name__ == "__main__":
    main()
