"""Mask tuning of Kwon et al. (2022) as its reference code does it (`prune/rescale.py`), layer by
layer from the bottom:

  teacher   the model under a mask searched at √c of the FLOPs budget c (less pruned)
  student   the model under the searched (and rearranged) mask, with the layers below already
            tuned: each layer sees the pruned model's own inputs (propagated, not the dense ones)
  heads     for the kept heads of layer i (layer 0 excepted), the scales x minimising
            ‖Σ_h x_h A_h + β·1 − (teacher attention output + residual − bias − student residual)‖²
            over the calibration tokens, A_h the head's contribution to the output projection;
            β, the bias column, is fitted and dropped
  neurons   the same for the kept FFN neurons (no bias column)
  solve     the reference runs LSMR (damp 1) on the normal equations G δ = r − G·1 centred on 1
            (x = 1 + δ); here the same damped problem is solved directly in float64,
            δ = (GᵀG + I)⁻¹ Gᵀ(r − G·1), which is LSMR's converged answer without its iteration
            limit (the reference in float32 stops at that limit in layer 1 and tunes nothing above)
  failure   a solution outside [−10, 10] is refused, as in the reference; `on_failure="stop"`
            ends tuning there (the reference), `"skip"` leaves that layer part untuned and goes
            on; either way the failure is reported in the method's facts
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.calibration import model_inputs
from methods.core.hooks import forward_hooks
from methods.pruning.encoder_units import head_dim, masks_applied
from methods.pruning.structure import struct_spec

BOUND = 10.0


class _Stop(Exception):
    """Ends a forward once the layer of interest has run."""


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0]


@torch.no_grad()
def layer_io(model: nn.Module, family, batches: list[dict], device: torch.device, head_mask: torch.Tensor,
             neuron_mask: torch.Tensor, layer: int) -> list[dict[str, torch.Tensor]]:
    """Per batch, layer `layer`'s masked inputs to the attention-output and FFN-output projections,
    the residuals added after them, and the real-token mask, with the model under the masks."""
    spec = struct_spec(family)
    block = family.blocks(model)[layer]
    m = dict(block.named_modules())
    cur: dict[str, torch.Tensor] = {}

    def grab(key):
        return lambda _m, args: cur.__setitem__(key, args[0].detach())

    def grab_residual(key):
        return lambda _m, args: cur.__setitem__(key, args[1].detach())

    def stop(_m, _args, _out):
        raise _Stop

    out = []
    with masks_applied(model, family, head_mask, neuron_mask):
        with forward_hooks(pre=[(m[spec.o], grab("ctx")), (m[_parent(spec.o)], grab_residual("res_att")),
                                (m[spec.mlp_down], grab("act")), (m[_parent(spec.mlp_down)], grab_residual("res_ffn"))],
                           post=[(block, stop)]):
            for batch in batches:
                cur = {}
                try:
                    model(**model_inputs(batch, device))
                except _Stop:
                    pass
                tok = batch["attention_mask"].to(device).bool().flatten()
                out.append({k: v.reshape(-1, v.shape[-1])[tok].double() for k, v in cur.items()})
    return out


def damped_solve(G: torch.Tensor, r: torch.Tensor, damp: float = 1.0) -> torch.Tensor:
    """x = 1 + δ, δ = argmin ‖G δ − (r − G·1)‖² + damp²‖δ‖² (the reference's LSMR problem), in float64."""
    G, r = G.double(), r.double()
    rhs = r - G.sum(1)
    delta = torch.linalg.solve(G.t() @ G + damp ** 2 * torch.eye(G.shape[0], dtype=G.dtype), G.t() @ rhs)
    return 1 + delta


@torch.no_grad()
def tune_like_reference(model: nn.Module, family, batches: list[dict], device: torch.device,
                        teacher: tuple[torch.Tensor, torch.Tensor], student: tuple[torch.Tensor, torch.Tensor],
                        on_failure: str = "stop",
                        damp: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The student masks (L, H), (L, N) rescaled layer by layer against the teacher masks."""
    spec, hd = struct_spec(family), head_dim(model)
    hm, nm = student[0].clone().float(), student[1].clone().float()
    th, tn = teacher[0].float(), teacher[1].float()
    report: dict[str, Any] = {"tuned": [], "failures": []}
    for i, block in enumerate(family.blocks(model)):
        m = dict(block.named_modules())
        Wo, bo = m[spec.o].weight.double(), m[spec.o].bias
        Wd, bd = m[spec.mlp_down].weight.double(), m[spec.mlp_down].bias
        bo = bo.double() if bo is not None else torch.zeros(Wo.shape[0], dtype=torch.float64, device=Wo.device)
        bd = bd.double() if bd is not None else torch.zeros(Wd.shape[0], dtype=torch.float64, device=Wd.device)
        t_io = layer_io(model, family, batches, device, th, tn, i)
        parts = [("heads", hm)] if i != 0 else []
        parts.append(("neurons", nm))
        for part, mask in parts:
            kept = (mask[i] != 0).nonzero().flatten()
            if kept.numel() == 0:
                continue
            s_io = layer_io(model, family, batches, device, hm, nm, i)
            k = kept.numel() + (1 if part == "heads" else 0)
            G = torch.zeros(k, k, dtype=torch.float64)
            r = torch.zeros(k, dtype=torch.float64)
            for t, s in zip(t_io, s_io):
                if part == "heads":
                    H = s["ctx"].shape[1] // hd
                    # teacher (projection + bias + residual) − bias − student residual, in the reference's order
                    target = t["ctx"] @ Wo.t() + bo + t["res_att"] - bo - s["res_att"]
                    ctx = s["ctx"].view(-1, H, hd)[:, kept.to(s["ctx"].device)]            # (T, k, hd)
                    W = Wo.view(Wo.shape[0], H, hd)[:, kept.to(Wo.device)]                 # (d, k, hd)
                    A = torch.einsum("tkd,okd->tko", ctx, W)                                # per-head outputs
                    ones = torch.ones(A.shape[0], 1, A.shape[2], dtype=A.dtype, device=A.device)
                    A = torch.cat([A, ones], 1)
                    G += torch.einsum("tko,tjo->kj", A, A).cpu()
                    r += torch.einsum("tko,to->k", A, target).cpu()
                else:
                    target = t["act"] @ Wd.t() + bd + t["res_ffn"] - bd - s["res_ffn"]
                    act = s["act"][:, kept.to(s["act"].device)]                           # (T, k)
                    W = Wd[:, kept.to(Wd.device)]                                          # (d, k)
                    G += ((act.t() @ act) * (W.t() @ W)).cpu()
                    r += (act * (target @ W)).sum(0).cpu()
            x = damped_solve(G, r, damp)
            x = x[:-1] if part == "heads" else x
            if not torch.isfinite(x).all() or x.abs().max() > BOUND:
                report["failures"].append({"layer": i, "part": part, "max_abs_scale": float(x.abs().max()),
                                           "action": on_failure})
                if on_failure == "stop":
                    report["stopped_at"] = {"layer": i, "part": part}
                    return hm, nm, report
                continue
            mask[i, kept] = mask[i, kept] * x.float().to(mask.device)
            report["tuned"].append(f"{i}.{part}")
    return hm, nm, report
