"""ZipLM (Kurtic et al. 2023) [77]: structured OBS pruning toward an inference-speedup target,
with a latency table of the device, in stages with distillation fine-tuning between them.

Per sub-layer (attention: head units = column groups of the output projection's input; FFN:
neurons = its columns), with X the projection's inputs over calibration tokens:
    H = X Xᵀ/n + damp·mean(diag)·I;   remove one group at a time (the cheapest):
        ΔL_S = tr(W_{:,S} (H⁻¹_SS)⁻¹ W_{:,S}ᵀ)
        W ← W − W_{:,S} (H⁻¹_SS)⁻¹ H⁻¹_{S,:};   H⁻¹ ← H⁻¹ − H⁻¹_{:,S} (H⁻¹_SS)⁻¹ H⁻¹_{S,:}
    giving every sub-layer's error curve err(k kept)
latency table: each sub-layer's time with k structures kept, measured on this device by the one timer
    (methods/core/hardware.seconds: the median of torch.utils.benchmark's blocked autorange)
    (the paper's latency table is of its own hardware; this harness measures the one it runs on)
search: per sub-layer k minimising Σ err subject to Σ latency ≤ dense latency / speedup target
        (dynamic programming over a discretised latency budget)
stages: the speedup targets grow geometrically to the final one; KD fine-tuning after each.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from methods.core.base import CompressionResult, Kind, RateBasis, TrainingInputs, register
from methods.core.calibration import model_inputs
from methods.core.hardware import seconds
from methods.core.hessian import dampen, one_thread
from methods.core.hooks import forward_hooks
from methods.core.model_facts import ModelSize
from methods.pruning.encoder_units import encoder_flops, head_dim
from methods.pruning.structure import remove_units, struct_spec, unfuse_gpt2, units
from methods.pruning.trained.base import TrainedPruning
from methods.pruning.trained.structured import block_params
from methods.core.settings import Count, Damp, Speedup


def _inverse(H: torch.Tensor, damp: float) -> torch.Tensor:
    return torch.linalg.inv(dampen(H.double(), damp))


def _remove_group(W: torch.Tensor, Hinv: torch.Tensor, g: int, group: int) -> torch.Tensor:
    """Remove group g from W (in place) with the OBS update; returns the updated H⁻¹."""
    s = slice(g * group, (g + 1) * group)
    inv_ss = torch.linalg.inv(Hinv[s, s])
    W -= W[:, s] @ inv_ss @ Hinv[s, :]
    W[:, s] = 0
    return Hinv - Hinv[:, s] @ inv_ss @ Hinv[s, :]


def obs_group_removal(W: torch.Tensor, H: torch.Tensor, group: int, damp: float = 0.01
                      ) -> tuple[list[int], list[float]]:
    """The order in which structured OBS removes the column groups of W (out, groups·group), the
    cheapest first, and the accumulated error after each removal."""
    n = W.shape[1] // group
    if n == 0:
        return [], []
    W, Hinv = W.double().clone(), _inverse(H, damp)
    alive = torch.ones(n, dtype=torch.bool, device=W.device)
    idx = torch.arange(n, device=W.device)
    order, errs, total = [], [], 0.0
    for _ in range(n):
        wg = W.view(W.shape[0], n, group)
        if group == 1:  # single columns: ΔL_j = ‖W_{:,j}‖² / [H⁻¹]_jj
            err = wg.pow(2).sum((0, 2)) / Hinv.diagonal().masked_fill(~alive, 1.0)
        else:
            blocks = Hinv.view(n, group, n, group)[idx, :, idx, :].clone()      # (n, g, g) diagonal blocks
            blocks[~alive] = torch.eye(group, dtype=blocks.dtype, device=blocks.device)  # removed: singular
            with one_thread(blocks.device):
                err = torch.einsum("onk,nkl,onl->n", wg, torch.linalg.inv(blocks), wg)
        err = err.masked_fill(~alive, float("inf"))
        g = int(err.argmin())
        total += float(err[g])
        Hinv = _remove_group(W, Hinv, g, group)
        alive[g] = False
        order.append(g)
        errs.append(total)
    return order, errs


def obs_remove(W: torch.Tensor, H: torch.Tensor, group: int, drop: list[int], damp: float = 0.01) -> torch.Tensor:
    """W after structured OBS removal of the groups `drop`, in that order (the other columns updated)."""
    W0, Hinv = W.double().clone(), _inverse(H, damp)
    for g in drop:
        Hinv = _remove_group(W0, Hinv, g, group)
    for g in drop:  # later updates leave rounding residue in the columns removed earlier
        W0[:, g * group:(g + 1) * group] = 0
    return W0.to(W.dtype)


LATENCY_RUN_TIME = 0.05   # seconds of repeats per measured size (about 22 sizes per table)


@torch.no_grad()
def latency_table(d: int, hd: int, q_per_unit: int, heads: int, neurons: int, mlp_up: int, tokens: tuple[int, int],
                  device: torch.device, points: int = 9) -> tuple[list[float], list[float]]:
    """Measured seconds of an attention sub-layer with k head units (k = 0..heads) and of an FFN
    with k neurons (interpolated between `points` measured sizes), on `device`, at (batch, seq)."""
    b, s = tokens
    x = torch.randn(b, s, d, device=device)

    def attn(k: int) -> float:
        if k == 0:
            return 0.0
        w = q_per_unit * hd * k
        wq, wkv, wo = torch.randn(w, d, device=device), torch.randn(2 * k * hd, d, device=device), \
            torch.randn(d, w, device=device)

        def run():
            q = (x @ wq.t()).view(b, s, k * q_per_unit, hd).transpose(1, 2)
            kv = (x @ wkv.t()).view(b, s, 2, k, hd)
            kk = kv[:, :, 0].transpose(1, 2).repeat_interleave(q_per_unit, 1)
            vv = kv[:, :, 1].transpose(1, 2).repeat_interleave(q_per_unit, 1)
            o = torch.nn.functional.scaled_dot_product_attention(q, kk, vv)
            return o.transpose(1, 2).reshape(b, s, w) @ wo.t()
        return seconds(run, LATENCY_RUN_TIME)

    def ffn(k: int) -> float:
        if k == 0:
            return 0.0
        wu, wd = torch.randn(mlp_up * k, d, device=device), torch.randn(d, k, device=device)

        def run():
            h = x @ wu.t()
            return torch.nn.functional.gelu(h[..., :k]) @ wd.t()
        return seconds(run, LATENCY_RUN_TIME)

    att = [attn(k) for k in range(heads + 1)]
    grid = sorted({round(i * neurons / (points - 1)) for i in range(points)})
    measured = [ffn(k) for k in grid]
    ff = [_interp(k, grid, measured) for k in range(neurons + 1)]
    return att, ff


def _interp(k: int, xs: list[int], ys: list[float]) -> float:
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= k <= x1:
            return y0 + (y1 - y0) * (k - x0) / max(1, x1 - x0)
    return ys[-1]


def search(errors: list[list[float]], latency: list[list[float]], budget: float, buckets: int = 2000) -> list[int]:
    """Per sub-layer the number of structures kept, minimising Σ err subject to Σ latency ≤ budget.
    errors[i][k] and latency[i][k]: sub-layer i with k kept. Dynamic programming over a budget
    discretised in `buckets` (costs rounded up, so the chosen set never exceeds the budget)."""
    unit = budget / buckets
    inf = float("inf")
    best = [0.0] + [inf] * buckets          # best[c]: least error with c buckets spent so far
    picks, costs = [], []
    for err, lat in zip(errors, latency):
        cost = [math.ceil(t / unit - 1e-9) for t in lat]
        new, pick = [inf] * (buckets + 1), [-1] * (buckets + 1)
        for c, e in enumerate(best):
            if e == inf:
                continue
            for k, (ek, ck) in enumerate(zip(err, cost)):
                cc = c + ck
                if cc <= buckets and e + ek < new[cc]:
                    new[cc], pick[cc] = e + ek, k
        best = new
        picks.append(pick)
        costs.append(cost)
    c = min(range(buckets + 1), key=lambda i: best[i])
    if best[c] == inf:
        raise ValueError("the speedup target cannot be met even with every structure removed")
    ks = []
    for pick, cost in zip(reversed(picks), reversed(costs)):
        k = pick[c]
        ks.append(k)
        c -= cost[k]
    return ks[::-1]


@register("ziplm")
class ZipLM(TrainedPruning):
    smoke = ({"speedup": 2.0},)
    version = 2   # 2: the latency table timed by hardware.seconds (was the median of 5 single calls)
    physical = True
    roles = ("encoder", "decoder")
    granularity = "N,H,S"

    def __init__(self, speedup: Speedup = 7.0, stages: int = 2, calib_batches: Count = 8, damp: Damp = 0.01,
                 seq_len: Count = 128, preset: str = "ziplm", label: str = "ZipLM", ref: str = "77",
                 tables: tuple[str, ...] = ("table2",), **kw: Any):
        kw.setdefault("deviations", ["latency table measured on the run's own device at the timing batch shape"])
        super().__init__(preset=preset, label=label, ref=ref, tables=tables, **kw)
        if speedup <= 1:
            raise ValueError(f"speedup (the inference-speedup target) must be > 1, got {speedup}")
        if stages < 1:
            raise ValueError(f"stages must be >= 1, got {stages}")
        self.speedup, self.stages, self.calib_batches, self.damp, self.seq_len = speedup, stages, calib_batches, \
            damp, seq_len
        self.rate = None

    def check_family(self, family, config=None) -> None:
        struct_spec(family)

    @torch.no_grad()
    def hessians(self, model, family, batches, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per block: X Xᵀ/n of the attention output projection's and the FFN down projection's inputs."""
        spec = struct_spec(family)
        acc = []
        pre = []
        for block in family.blocks(model):
            m = dict(block.named_modules())
            entry = [torch.zeros(m[n].in_features, m[n].in_features, device=device, dtype=torch.float64)
                     for n in (spec.o, spec.mlp_down)] + [0]
            acc.append(entry)
            for j, n in enumerate((spec.o, spec.mlp_down)):
                def hook(_m, a, entry=entry, j=j):
                    if a[0].shape[-1] == 0:  # every structure of this sub-layer removed already
                        return
                    x = a[0].reshape(-1, a[0].shape[-1])
                    if self._keep is not None:
                        x = x[self._keep.reshape(-1)]
                    entry[j] += (x.double().t() @ x.double())
                    if j == 0:
                        entry[2] += x.shape[0]
                pre.append((m[n], hook))
        model.eval()
        with forward_hooks(pre=pre):
            for b in batches:
                self._keep = b["attention_mask"].bool().to(device) if "attention_mask" in b else None
                model(**model_inputs(b, device))
        return [(h0 / max(n, 1), h1 / max(n, 1)) for h0, h1, n in acc]

    def prune_to(self, model, family, speedup: float, batches, device, plan: Path | None = None) -> dict[str, Any]:
        """One stage: error curves, the latency table, the search, the OBS removal. `plan` keeps the
        stage's decision on disk, so that a resumed run rebuilds the same shapes (the latency
        table is a measurement, and would differ)."""
        spec, hd = struct_spec(family), head_dim(model)
        blocks = family.blocks(model)
        hs = self.hessians(model, family, batches, device)
        bsz, seq = batches[0]["input_ids"].shape
        errors, lat, orders = [], [], []
        for block, (h_att, h_ffn) in zip(blocks, hs):
            m = dict(block.named_modules())
            u = units(block, spec, hd)
            for name, H, group, n in ((spec.o, h_att, hd * u.q_per_unit, u.n_heads),
                                      (spec.mlp_down, h_ffn, 1, u.n_channels)):
                order, errs = obs_group_removal(m[name].weight.data.float(), H, group, self.damp)
                errors.append([errs[n - k - 1] if k < n else 0.0 for k in range(n + 1)])
                orders.append(order)
        d = blocks[0].get_submodule(spec.q).in_features
        u0 = units(blocks[0], spec, hd)
        self._table = self._table or latency_table(d, hd, u0.q_per_unit, u0.n_heads, u0.n_channels,
                                                   len(spec.mlp_up), (bsz, seq), device)
        att_t, ffn_t = self._table
        for block in blocks:
            u = units(block, spec, hd)
            lat.append(att_t[:u.n_heads + 1])
            lat.append(ffn_t[:u.n_channels + 1])
        dense = sum(att_t[-1] + ffn_t[-1] for _ in blocks)
        if plan is not None and plan.is_file():
            keep = json.loads(plan.read_text())["kept"]
        else:
            keep = search(errors, lat, dense / speedup)
            if plan is not None:
                plan.parent.mkdir(parents=True, exist_ok=True)
                plan.write_text(json.dumps({"kept": keep}))
        for i, block in enumerate(blocks):
            m = dict(block.named_modules())
            u = units(block, spec, hd)
            ka, kf = keep[2 * i], keep[2 * i + 1]
            drop_h, drop_n = orders[2 * i][: u.n_heads - ka], orders[2 * i + 1][: u.n_channels - kf]
            with torch.no_grad():
                if drop_h:
                    m[spec.o].weight.copy_(obs_remove(m[spec.o].weight.data, hs[i][0], hd * u.q_per_unit, drop_h,
                                                      self.damp))
                if drop_n:
                    m[spec.mlp_down].weight.copy_(obs_remove(m[spec.mlp_down].weight.data, hs[i][1], 1, drop_n,
                                                             self.damp))
            remove_units(block, spec, u, drop_h, drop_n)
        return {"speedup_target": speedup, "kept": keep,
                "predicted_latency_s": sum(lat_i[k] for lat_i, k in zip(lat, keep)), "dense_latency_s": dense}

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        unfuse_gpt2(model, family)
        encoder = family.role == "encoder"
        flops_before = encoder_flops(model, family, self.seq_len) if encoder else None
        params_before = block_params(model, family)
        self._table = None
        self._keep = None
        steps = self.total_steps(inputs)
        targets = [self.speedup ** ((s + 1) / self.stages) for s in range(self.stages)]
        stages = []
        for s, target in enumerate(targets):
            batches = inputs.data(s)[: self.calib_batches]
            ckpt = inputs.trainer.checkpoint_dir
            plan = ckpt / f"ziplm_stage{s}.json" if ckpt is not None else None
            stages.append(self.prune_to(model.to(device), family, target, batches, device, plan))
            stage_steps = steps // self.stages + (steps % self.stages if s == self.stages - 1 else 0)
            if stage_steps:
                inputs.fit(model, self.loss(), teacher=self.teacher(inputs), steps=stage_steps, name=f"stage{s}")
        self.facts.update(stages=stages, latency_table={"attention_s": self._table[0], "ffn_s": self._table[1]},
                          block_params_before=params_before, block_params_after=block_params(model, family))
        if encoder:
            self.facts.update(flops_before=flops_before, flops_after=encoder_flops(model, family, self.seq_len))
        self.rate = 1 - self.facts["block_params_after"] / params_before
        return model.eval()

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        f = self.facts
        return CompressionResult(Kind.STRUCTURED, self.granularity, before, after, RateBasis.MEMORY,
                                 flops_before=f.get("flops_before"), flops_after=f.get("flops_after"),
                                 comp_rate=1 - f["block_params_after"] / f["block_params_before"],
                                 facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "speedup_target": self.speedup, "stages": self.stages,
                "rate_counts": "fraction of the blocks' weights removed (embeddings excluded)"}
