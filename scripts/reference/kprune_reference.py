"""Run the Kprune reference code (snudm-starlab/K-prune, `src/`) stage by stage on inputs dumped
by `kprune_compare.py dump`, in the reference's own environment (transformers 4.25; see
scripts/reference/README.md). Nothing here imports compbench; the reference code is imported from
its checkout (`--ref-src`), not copied.

    .refenv/bin/python scripts/reference/kprune_reference.py --ref-src /tmp/K-prune/src \
        --inputs /tmp/kprune/inputs.pt --out /tmp/kprune/reference.pt
"""
from __future__ import annotations

import copy
import logging

import torch
from refenv import reference_args


def main() -> None:
    args = reference_args()
    from transformers import AutoModelForQuestionAnswering
    from prune import compute_scores, find_mask, knowledge_reconstruction, kprune  # the reference's
    from utils.capacity import flops_per_head, flops_per_neuron, get_flops

    inp = torch.load(args.inputs)
    s = inp["settings"]
    model = AutoModelForQuestionAnswering.from_pretrained(inp["teacher"]).eval()
    for p in model.parameters():
        p.requires_grad = False
    cfg = model.config
    L, H, N = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size
    hd, d = cfg.hidden_size // H, cfg.hidden_size
    model_flops = get_flops([H] * L, [N] * L, s["seq_len"], hd, d) / 1e9
    f_head, f_neuron = flops_per_head(s["seq_len"], hd, d) / 1e9, flops_per_neuron(s["seq_len"], d) / 1e9
    batches = [dict(b) for b in inp["batches"]]

    # stage by stage on the uncompressed model, target sub-layer 0 (MHA of layer 0)
    kd_outputs, kd_labels = {}, []
    head_scores, neuron_scores, features, x_in, kd_outputs, kd_labels = compute_scores(
        copy.deepcopy(model), [dict(b) for b in batches], True, 0, hd, L, H, N, s["lam_pred"], s["lam_rep"],
        s["mu"], s["T"], f_head, f_neuron, kd_outputs, kd_labels)
    max_flops = model_flops * (1.0 - s["flops_rate"])
    mask0 = find_mask(0, head_scores, neuron_scores, f_head, f_neuron, max_flops)
    W0 = knowledge_reconstruction(model, mask0, 0, features, x_in, kd_outputs[0], hd)

    # the whole procedure, with the reference's sub-layer-wise tuning
    log = logging.getLogger("kprune-reference")
    logging.basicConfig(level=logging.INFO)
    pruned = copy.deepcopy(model)
    hm, nm = torch.ones(L, H), torch.ones(L, N)
    pruned, hm, nm = kprune(pruned, [dict(b) for b in batches], True, hd, s["lam_pred"], s["lam_rep"], s["mu"], s["T"],
                            model_flops, f_head, f_neuron, hm, nm, s["flops_rate"], True, log)
    torch.save({"head_scores": head_scores, "neuron_scores": neuron_scores, "mask0": mask0, "W0": W0,
                "head_masks": hm.float(), "neuron_masks": nm.float(),
                "state_dict": {k: v.clone() for k, v in pruned.state_dict().items()}}, args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
