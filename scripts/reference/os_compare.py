"""Outlier Suppression, compbench against its reference code, stage by stage on identical inputs
(issue 17).

    python scripts/reference/os_compare.py dump --out /tmp/os/inputs.pt
    .refenv/bin/python scripts/reference/os_reference.py --ref-src <outlier_suppression> \
        --inputs /tmp/os/inputs.pt --out /tmp/os/reference.pt
    python scripts/reference/os_compare.py compare --inputs /tmp/os/inputs.pt --reference /tmp/os/reference.pt

`dump` draws the published row's calibration features of the shared MiniLM teacher
(squad_dev_split, 192-token windows, 128 features, seed 0) and groups them as compbench does into
the reference's batches of 32 (search) and 8 (learning). `compare` runs compbench's stages on them
and prints the agreement with the reference's:
  - Gamma Migration: the non-scaling LayerNorm outputs, and the output of the migrated model;
  - the coarse search: its loss at every ratio, the chosen ratio, every quantizer's range;
  - the learnt LSQ+ scales and zero points;
  - the quantized weights;
  - the quantized model's output with the reference's parameters loaded into compbench's quantizers;
  - SQuAD F1 of compbench's model and of compbench's model with the reference's parameters.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

TEACHER = "models/minilm-l6-squad-dev-split"
OVERRIDES = ["model=minilm", "task=squad_dev_split", "task.max_length=192", "task.doc_stride=64",
             "task.max_eval_examples=1000", f"model.finetuned={TEACHER}", "method=outlier_suppression",
             "progress=false"]
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def planned():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from eval.pipeline import plan
    root = Path(__file__).resolve().parent.parent.parent
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=OVERRIDES)
    return plan(OmegaConf.to_container(cfg, resolve=True))


def dump(args) -> None:
    from methods.core.calibration import rebatch
    p = planned()
    loaded = p.task.load("cpu")
    calib = p.task.calibration(loaded, p.cfg["seed"])
    m = p.method
    keep = lambda bs: [{k: b[k] for k in INPUT_KEYS if k in b} for b in bs]  # noqa: E731
    search, learn = rebatch(calib.batches, m.batch_size or 32), rebatch(calib.batches, m.learn_batch_size or 8)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"calib": calib.batches, "search": keep(search), "learn": keep(learn), "seed": p.cfg["seed"],
                "teacher": str(Path(TEACHER).resolve()), "abits": m.abits, "wbits": m.spec.bits,
                "seq_len": max(b["input_ids"].shape[1] for b in search), "learn_lr": m.lr,
                "learn_epochs": m.epochs}, args.out)
    print(f"wrote {args.out}: {sum(b['input_ids'].shape[0] for b in search)} features, "
          f"{len(search)} search batches, {len(learn)} learning batches")


def ours_name(ref: str) -> str | None:
    """The compbench quantizer that sits where the reference's does."""
    layer = r"bert\.encoder\.layer\.(\d+)\."
    rules = [(r"bert\.embeddings\.LayerNorm\.layernorm_post_act_fake_quantize", "embeddings.LayerNorm"),
             (layer + r"attention\.self\.query_permute_post_act_fake_quantize", r"\1.attention.self.query"),
             (layer + r"attention\.self\.key_transpose_post_act_fake_quantize", r"\1.attention.self.key"),
             (layer + r"attention\.self\.value_permute_post_act_fake_quantize", r"\1.attention.self.value"),
             (layer + r"attention\.self\.attention_probs_post_act_fake_quantize", r"\1.attention.probs"),
             (layer + r"attention\.self\.context_view_post_act_fake_quantize", r"\1.attention.output.dense"),
             (layer + r"attention\.output\.LayerNorm\.layernorm_post_act_fake_quantize",
              r"\1.attention.output.LayerNorm"),
             (layer + r"intermediate\.intermediate_act_fn_post_act_fake_quantize", r"\1.output.dense"),
             (layer + r"output\.LayerNorm\.layernorm_post_act_fake_quantize", r"\1.output.LayerNorm")]
    for pattern, repl in rules:
        if re.fullmatch(pattern, ref):
            return re.sub(pattern, repl, ref)
    return None


def module_name(model, module) -> str:
    return next(n for n, m in model.named_modules() if m is module)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def qparam_diffs(points, ref: dict[str, tuple[float, float]], learnt: bool) -> tuple[float, int, int]:
    """Largest relative scale difference, zero points that differ, quantizers matched."""
    by_name = {p.quant.name: p.quant for p in points}
    worst, zdiff, n = 0.0, 0, 0
    for rname, (s_ref, z_ref) in ref.items():
        q = by_name.get(ours_name(rname))
        if q is None:
            continue
        n += 1
        if learnt:
            s, z = float(q.scale), float(q.zero)
        else:
            lo, hi = q.coarse
            s = (hi - lo) / q.qmax
            z = -lo / s
        worst = max(worst, abs(s - s_ref) / abs(s_ref))
        zdiff += int(round(z) != round(z_ref))
    return worst, zdiff, n


def compare(args) -> None:
    from eval.tasks.base import Loaded
    from methods.core.calibration import InputBatches, model_inputs
    inp, ref = torch.load(args.inputs), torch.load(args.reference)
    p = planned()
    loaded = p.task.load("cpu")
    model, fam, dev = loaded.model, loaded.family, torch.device("cpu")
    torch.manual_seed(inp["seed"])
    method = copy.deepcopy(p.method)
    x0 = inp["search"][0]

    # stage 1: Gamma Migration, in full precision
    method.points = method.quant_points(model, fam)
    split = {}
    from methods.core.hooks import forward_hooks
    post = [(pt.module, lambda _m, _a, out, pt=pt: split.__setitem__(pt.quant.name, (out / pt.gamma)[:4].clone()))
            for pt in method.points if pt.gamma is not None]
    with torch.no_grad(), forward_hooks(post=post):
        fp_logits = model(**model_inputs(x0, dev)).start_logits[:4]
    diffs = [rel(split[ours_name(n)], t) for n, t in ref["split_ln"].items() if ours_name(n) in split]
    print(f"Gamma Migration: {len(diffs)} non-scaling LayerNorm outputs, largest rel. diff {max(diffs):.2e}; "
          f"migrated model's output vs compbench's unmigrated: "
          f"rel. diff {rel(ref['migrated_start_logits'], fp_logits):.2e}")

    # the whole compbench run on the same features (its own regrouping into 32 and 8)
    ours = copy.deepcopy(model)
    method = copy.deepcopy(p.method)
    ours = method.compress_model(ours, fam, InputBatches(inp["calib"]), dev)
    f = method.facts
    cl, rl = torch.tensor(f["coarse_losses"]), torch.tensor(ref["coarse_losses"])
    print(f"coarse search: {len(cl)} ratios (reference {len(rl)}); loss curve rel. diff {rel(cl, rl):.2e}, "
          f"largest per ratio {float(((cl - rl).abs() / rl).max()):.2e}; chosen ratio compbench {f['ratio']:.4f}, "
          f"reference {ref['ratio']:.4f}")
    worst, zd, n = qparam_diffs(method.points, ref["coarse"], learnt=False)
    print(f"coarse ranges: {n} quantizers matched; largest rel. scale diff {worst:.2e}; zero points differing {zd}")
    worst, zd, n = qparam_diffs(method.points, ref["learnt"], learnt=True)
    print(f"learnt LSQ+ parameters: largest rel. scale diff {worst:.2e}; zero points differing {zd} "
          f"(learning losses per epoch {[round(v, 4) for v in f['learn_losses']]})")

    # quantized weights (the reference holds W·γ for migrated readers)
    gam = {id(r): pt.gamma for pt in method.points for r in pt.readers}
    mods = dict(ours.named_modules())
    wd = []
    for name, w_ref in ref["weights"].items():
        mod = mods.get(name)
        if mod is None:
            continue
        w = mod.weight.detach().float()
        g = gam.get(id(mod))
        wd.append(rel(w * g if g is not None else w, w_ref))
    print(f"quantized weights: {len(wd)} matrices, largest rel. diff {max(wd):.2e}")

    # the reference's parameters in compbench's quantizers: same forward, then F1
    theirs = copy.deepcopy(ours)
    m2 = copy.deepcopy(method)
    m2.points = m2.quant_points(theirs, fam)
    for pt in m2.points:
        pt.quant.mode = "quant"
    by_name = {pt.quant.name: pt.quant for pt in m2.points}
    for rname, (s, z) in ref["learnt"].items():
        q = by_name[ours_name(rname)]
        q.scale, q.zero = torch.tensor(s), torch.tensor(z)
    m2.attach(theirs)
    keep = x0["attention_mask"] == 1
    # the reference's split LayerNorm is a new nn.LayerNorm with PyTorch's default eps (1e-5), not
    # the model's (1e-12): with that eps the two forwards must be the same function
    eps = copy.deepcopy(theirs)
    for pt in m2.points:
        if pt.gamma is not None:
            dict(eps.named_modules())[module_name(theirs, pt.module)].eps = 1e-5
    with torch.no_grad():
        out, out_eps = theirs(**model_inputs(x0, dev)), eps(**model_inputs(x0, dev))
    for label, o in (("compbench's LayerNorm eps", out), ("the reference's eps 1e-5", out_eps)):
        per_seq = [rel(o.start_logits[i][keep[i]], ref["start_logits"][i][keep[i]]) for i in range(len(keep))]
        same = sum(d < 1e-5 for d in per_seq)
        print(f"quantized forward with the reference's parameters, {label}: start-logit rel. diff "
              f"{rel(o.start_logits[keep], ref['start_logits'][keep]):.2e}, "
              f"end {rel(o.end_logits[keep], ref['end_logits'][keep]):.2e}; "
              f"{same}/{len(per_seq)} sequences agree to 1e-5")
    for label, m in (("compbench", ours), ("reference parameters", theirs)):
        ev = p.task.evaluate(Loaded(m, loaded.tokenizer, fam), dev, f"os-{label}")
        print(f"{label}: F1 {ev.headline:.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--inputs", required=True)
    c.add_argument("--reference", required=True)
    a = ap.parse_args()
    dump(a) if a.cmd == "dump" else compare(a)
