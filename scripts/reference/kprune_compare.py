"""Kprune, compbench against its reference code, stage by stage on identical inputs (issue 17).

    python scripts/reference/kprune_compare.py dump --out /tmp/kprune/inputs.pt
    .refenv/bin/python scripts/reference/kprune_reference.py --ref-src <K-prune>/src \
        --inputs /tmp/kprune/inputs.pt --out /tmp/kprune/reference.pt
    python scripts/reference/kprune_compare.py compare --inputs /tmp/kprune/inputs.pt \
        --reference /tmp/kprune/reference.pt

`dump` draws compbench's calibration features of the shared MiniLM teacher (squad_dev_split,
192-token windows, the published rows' settings) in the reference's mini-batches of 12;
`compare` runs compbench's stages on them and prints the agreement with the reference's:
knowledge scores of every unit at the first sub-layer, the first mask, the first tuned
projection, then both whole runs (kept units per layer and SQuAD F1 of each pruned model).
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

TEACHER = "models/minilm-l6-squad-dev-split"
OVERRIDES = ["model=minilm", "task=squad_dev_split", "task.max_length=192", "task.doc_stride=64",
             "task.max_eval_examples=1000", f"model.finetuned={TEACHER}", "method=kprune", "progress=false"]


def planned(flops_rate: float):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from eval.pipeline import plan
    root = Path(__file__).resolve().parent.parent.parent
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*OVERRIDES, f"method.flops_rate={flops_rate}"])
    return plan(OmegaConf.to_container(cfg, resolve=True))


def dump(args) -> None:
    p = planned(args.flops_rate)
    loaded = p.task.load("cpu")
    batches = p.task.training_batches(loaded.tokenizer, 12, args.seed, limit=args.nsamples)
    m = p.method
    settings = {"flops_rate": m.flops_rate, "seq_len": m.seq_len, "lam_pred": m.lam_pred, "lam_rep": m.lam_rep,
                "mu": m.mu, "T": m.T}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"batches": batches, "teacher": str(Path(TEACHER).resolve()), "settings": settings}, args.out)
    print(f"wrote {args.out}: {len(batches)} mini-batches, {sum(b['input_ids'].shape[0] for b in batches)} features")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def compare(args) -> None:
    from eval.tasks.base import Loaded
    from methods.pruning.kprune import keep_within_budget, reconstruct, sublayer_modules
    from methods.pruning.encoder_units import head_dim, layer_shapes, unit_flops
    from methods.pruning.structure import remove_units, struct_spec, units
    inp, ref = torch.load(args.inputs), torch.load(args.reference)
    p = planned(inp["settings"]["flops_rate"])
    loaded = p.task.load("cpu")
    model, fam, batches, dev = loaded.model, loaded.family, inp["batches"], torch.device("cpu")
    for q in model.parameters():
        q.requires_grad_(False)
    k = p.method
    spec, hd = struct_spec(fam), head_dim(model)
    L = model.config.num_hidden_layers

    # stage 1: knowledge scores of every unit, on the uncompressed model (target sub-layer 0)
    soft, kd = k.original_knowledge(model, fam, batches, dev)
    scores, feats, x_cur = k.measure(model, fam, batches, soft, dev, 0)
    ours_h = torch.stack([scores[2 * i] for i in range(L)]) * 1e9      # the reference counts GFLOPs
    ours_n = torch.stack([scores[2 * i + 1] for i in range(L)]) * 1e9
    print(f"knowledge scores, heads:   rel. diff {rel(ours_h, ref['head_scores']):.2e}; "
          f"rank agreement {rank_agreement(ours_h, ref['head_scores']):.4f}")
    print(f"knowledge scores, neurons: rel. diff {rel(ours_n, ref['neuron_scores']):.2e}; "
          f"rank agreement {rank_agreement(ours_n, ref['neuron_scores']):.4f}")

    # stage 2: the first mask (KPMS over every unit, the target's part)
    head_f, neuron_f = unit_flops(model, k.seq_len)
    full = sum(h * head_f + n * neuron_f for h, n in layer_shapes(model, fam))
    order = sorted(scores)
    flops = torch.cat([torch.full_like(scores[s], neuron_f if s % 2 else head_f) for s in order])
    keep = keep_within_budget(torch.cat([scores[s] for s in order]), flops, (1 - k.flops_rate) * full)
    mask0 = keep[: scores[0].numel()]
    print(f"first mask (layer 0 heads): compbench {mask0.int().tolist()} reference {ref['mask0'].int().tolist()}"
          f" -> {'identical' if torch.equal(mask0, ref['mask0'].bool()) else 'DIFFERENT'}")

    # stage 3: the first tuned projection (least squares on the same features)
    block = fam.blocks(model)[0]
    out_proj = dict(block.named_modules())[sublayer_modules(block, spec, False)[1]]
    cols = ref["mask0"].bool().repeat_interleave(hd)
    y = kd[0] - x_cur - out_proj.bias.detach().float()
    W = reconstruct(feats[:, cols], y)
    print(f"first tuned projection: rel. diff {rel(W, ref['W0']):.2e} (same mask, same features)")

    # whole runs: kept units per layer and F1
    ours = k.compress_model(copy.deepcopy(model), fam, type("C", (), {"batches": batches})(), dev)
    theirs = copy.deepcopy(model)
    for i, blk in enumerate(fam.blocks(theirs)):
        drop_h = (ref["head_masks"][i] == 0).nonzero().flatten().tolist()
        drop_n = (ref["neuron_masks"][i] == 0).nonzero().flatten().tolist()
        remove_units(blk, spec, units(blk, spec, hd), drop_h, drop_n)
    missing, unexpected = theirs.load_state_dict(ref["state_dict"], strict=False)
    print(f"reference weights loaded (missing {len(missing)}, unexpected {len(unexpected)} keys)")
    print(f"kept (heads, neurons) per layer: compbench {layer_shapes(ours, fam)}; "
          f"reference {layer_shapes(theirs, fam)}")
    for name, m in (("compbench", ours), ("reference", theirs)):
        ev = p.task.evaluate(Loaded(m, loaded.tokenizer, fam), dev, f"kprune-{name}")
        print(f"{name}: F1 {ev.headline:.2f}")


def rank_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of unit pairs (within each layer) that both score lists order alike."""
    agree = total = 0
    for x, y in zip(a, b):
        dx = x.unsqueeze(0) - x.unsqueeze(1)
        dy = y.unsqueeze(0) - y.unsqueeze(1)
        agree += int(((dx * dy) > 0).sum())
        total += int((dx != 0).sum())
    return agree / max(total, 1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--out", required=True)
    d.add_argument("--flops-rate", type=float, default=0.5)
    d.add_argument("--nsamples", type=int, default=128)
    d.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare")
    c.add_argument("--inputs", required=True)
    c.add_argument("--reference", required=True)
    a = ap.parse_args()
    dump(a) if a.cmd == "dump" else compare(a)
