"""Outlier Suppression (Wei et al., 2022), post-training W6A6 / W4A4 quantization of BERT.

Algorithm (paper §4):
  1. Gamma Migration: a LayerNorm output γ ⊙ x̂ + β is quantized in its non-scaling form
     x' = x̂ + β/γ, which has far milder outliers; γ moves into the weights of the linears that
     read it (W' = W·diag(γ)) and onto the residual shortcut (x'·γ, elementwise, in full precision).
  2. Token-wise Clipping, coarse stage: the clipping range of each quantized activation is
     [quantile_α(token minima), quantile_{1−α}(token maxima)] — outliers sit in a few tokens, so
     clipping those tokens costs little; one α for all activations, from a grid, the one whose
     quantized model output is closest (MSE) to the full-precision output on calibration batches.
  3. Token-wise Clipping, fine stage: all ranges are refined together by Adam on the same output
     loss through the quantizer (straight-through rounding, LSQ+-style learnable bounds), starting
     from the coarse result; the coarse ranges are kept if refinement does not lower the loss.
  Weights: symmetric per output channel, min-max (after migration); activations: asymmetric per
  tensor with the calibrated static range, on every input of the encoder linears.
Quantized activations are the inputs of the encoder linears (and the shortcut values of the
migrated LayerNorms); the attention matmuls and the task head stay in full precision.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import ModelMethod, TableRow, register
from methods.core.calibration import InputBatches, model_inputs
from methods.core.hooks import attach, forward_hooks
from methods.quantization.base import QuantLedger
from methods.quantization.quantizer import quantize_weight
DEFAULT_ALPHAS = (0.0, 1e-4, 1e-3, 3e-3, 0.01, 0.02, 0.05, 0.1)


def fake_quant_range(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, ste: bool = False) -> torch.Tensor:
    """Asymmetric uniform quantization of x clipped to [lo, hi] (integer zero point); with `ste`
    the rounding passes gradients straight through, so lo and hi are learnable."""
    n = 2 ** bits - 1
    s = ((hi - lo) / n).clamp(min=1e-8)
    z = -lo / s
    z = z + (torch.round(z) - z).detach() if ste else torch.round(z)
    v = x / s + z
    v = v + (torch.round(v) - v).detach() if ste else torch.round(v)
    return (torch.clamp(v, 0, n) - z) * s


def token_clip_range(tok_min: torch.Tensor, tok_max: torch.Tensor, alpha: float) -> tuple[float, float]:
    """The coarse range: the α-quantile of the token minima and the (1−α)-quantile of the maxima."""
    lo = float(torch.quantile(tok_min.float(), alpha)) if alpha > 0 else float(tok_min.min())
    hi = float(torch.quantile(tok_max.float(), 1 - alpha)) if alpha > 0 else float(tok_max.max())
    return min(lo, 0.0), max(hi, 0.0)


def output_of(model: nn.Module, batch: dict, device) -> torch.Tensor:
    """The task head's output (QA: start and end logits side by side) at the non-padding tokens
    for QA, per sequence for classification."""
    out = model(**model_inputs(batch, device))
    if hasattr(out, "start_logits"):
        keep = batch["attention_mask"].bool().to(device)
        return torch.stack([out.start_logits[keep], out.end_logits[keep]], -1).float()
    return out.logits.float()


@dataclass
class Point:
    """One quantized activation: a LayerNorm output (read by `readers` and the shortcut) or a
    linear's own input."""
    name: str
    module: nn.Module
    readers: list[nn.Module]
    is_norm: bool
    gamma: torch.Tensor | None = None
    tok_min: list = field(default_factory=list)
    tok_max: list = field(default_factory=list)


def quant_points(model: nn.Module, family) -> list[Point]:
    """BERT: the embedding LayerNorm and each block's two LayerNorms feed the next linears; the
    attention-output and FFN-output projections quantize their own inputs. The last block's
    output LayerNorm feeds the (full-precision) task head."""
    emb_norm = next(m for n, m in model.named_modules() if n.endswith("embeddings.LayerNorm"))
    blocks = family.blocks(model)
    qkv = lambda b: [b.attention.self.query, b.attention.self.key, b.attention.self.value]  # noqa: E731
    points = [Point("embeddings.LayerNorm", emb_norm, qkv(blocks[0]), True)]
    for i, b in enumerate(blocks):
        points.append(Point(f"{i}.attention.output.dense", b.attention.output.dense, [b.attention.output.dense], False))
        points.append(Point(f"{i}.attention.output.LayerNorm", b.attention.output.LayerNorm, [b.intermediate.dense], True))
        points.append(Point(f"{i}.output.dense", b.output.dense, [b.output.dense], False))
        if i + 1 < len(blocks):
            points.append(Point(f"{i}.output.LayerNorm", b.output.LayerNorm, qkv(blocks[i + 1]), True))
    return points


def safe_gamma(norm: nn.Module) -> torch.Tensor:
    g = norm.weight.detach().float()
    return torch.where(g.abs() < 1e-5, torch.full_like(g, 1e-5) * torch.where(g < 0, -1.0, 1.0), g)


@register("outlier_suppression")
class OutlierSuppression(QuantLedger, ModelMethod):
    accepts = (InputBatches,)
    rows = {"table4": TableRow("Outlier Suppression", "147", uniform="UQ")}

    def __init__(self, wbits: int = 6, abits: int = 6, gamma_migration: bool = True,
                 alphas: list[float] | None = None, fine_steps: int = 50, fine_lr: float = 1e-3,
                 search_batches: int = 4, nominal_base: int | None = None):
        alphas = list(alphas or DEFAULT_ALPHAS)
        super().__init__(wbits, True, -1, "channel", "minmax", nominal_base)
        if not 2 <= abits <= 16:
            raise ValueError(f"abits must be 2..16, got {abits}")
        if search_batches < 1:
            raise ValueError(f"search_batches must be >= 1, got {search_batches}")
        self.abits, self.migrate, self.alphas = abits, gamma_migration, alphas
        self.steps, self.lr, self.search_batches = fine_steps, fine_lr, search_batches
        self.bounds: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.ste = False
        self.facts: dict[str, Any] = {}

    @property
    def needs_calibration(self) -> bool:
        return True

    def check_model(self, linears, family=None) -> None:
        if family is not None and family.name != "bert":
            raise ValueError("outlier_suppression's Gamma Migration is written for post-LN encoders (BERT family), "
                             f"not '{family.name}'; for decoders use method=smoothquant")

    @torch.no_grad()
    def collect(self, model: nn.Module, points: list[Point], batches, device) -> None:
        """Token-wise minima and maxima of every point over the non-padding calibration tokens."""
        keep: list[torch.Tensor] = []

        def record(p: Point, x: torch.Tensor):
            x = x[keep[-1]].float()
            if p.is_norm and self.migrate:
                x = x / p.gamma.to(x.device)
            p.tok_min.append(x.amin(-1).cpu())
            p.tok_max.append(x.amax(-1).cpu())

        post = [(p.module, lambda _m, _a, out, p=p: record(p, out)) for p in points if p.is_norm]
        pre = [(p.module, lambda _m, a, p=p: record(p, a[0])) for p in points if not p.is_norm]
        with forward_hooks(pre=pre, post=post):
            for batch in batches:
                keep.append(batch["attention_mask"].bool().to(device))
                model(**model_inputs(batch, device))
        for p in points:
            p.tok_min, p.tok_max = torch.cat(p.tok_min), torch.cat(p.tok_max)

    def compress_model(self, model: nn.Module, family, calib: InputBatches, device: torch.device,
                       batch_size: int = 8) -> nn.Module:
        batches = calib.batches
        model.to(device).eval()
        for prm in model.parameters():
            prm.requires_grad_(False)
        points = quant_points(model, family)
        for p in points:
            if p.is_norm:
                p.gamma = safe_gamma(p.module)
        self.collect(model, points, batches, device)
        search = batches[: self.search_batches]
        with torch.no_grad():
            reference = [output_of(model, b, device) for b in search]
        self.quantize_weights(model, family, points)
        for p in points:
            self.attach(p)
        loss = lambda: sum(float((output_of(model, b, device) - r).pow(2).mean())  # noqa: E731
                           for b, r in zip(search, reference))
        # coarse: one clipping ratio α for every activation, the one with the least output loss
        coarse = {}
        with torch.no_grad():
            for a in self.alphas:
                self.set_ranges(points, {p.name: token_clip_range(p.tok_min, p.tok_max, a) for p in points})
                coarse[a] = loss()
        alpha = min(coarse, key=coarse.get)
        start = {p.name: token_clip_range(p.tok_min, p.tok_max, alpha) for p in points}
        self.set_ranges(points, start)
        fine = self.refine(model, points, search, reference, device) if self.steps else coarse[alpha]
        if fine > coarse[alpha]:
            self.set_ranges(points, start)
        self.facts = {"alpha": alpha, "coarse_losses": coarse, "fine_loss": min(fine, coarse[alpha]),
                      "minmax_loss": coarse.get(0.0)}
        return model

    def refine(self, model, points, search, reference, device) -> float:
        """Fine stage: the bounds as learnable parameters (straight-through rounding), Adam on the
        output loss; returns the loss of the final bounds."""
        params = [{"params": [self.bounds[p.name][0], self.bounds[p.name][1]],
                   "lr": self.lr * float(self.bounds[p.name][1] - self.bounds[p.name][0]).__abs__()} for p in points]
        for group in params:
            for t in group["params"]:
                t.requires_grad_(True)
        opt = torch.optim.Adam(params)
        self.ste = True
        with torch.enable_grad():
            for step in range(self.steps):
                i = step % len(search)
                loss = (output_of(model, search[i], device) - reference[i]).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for p in points:
                        self.bounds[p.name][0].clamp_(max=0.0)
                        self.bounds[p.name][1].clamp_(min=0.0)
        self.ste = False
        for group in params:
            for t in group["params"]:
                t.requires_grad_(False)
        with torch.no_grad():
            return sum(float((output_of(model, b, device) - r).pow(2).mean()) for b, r in zip(search, reference))

    @torch.no_grad()
    def quantize_weights(self, model, family, points) -> None:
        """Per-channel symmetric; a migrated reader quantizes W·diag(γ) and keeps Q(W·γ)/γ, since
        the LayerNorm hook hands it Q(x')·γ (the shortcut's value)."""
        migrated = {id(r): p.gamma for p in points if p.is_norm and self.migrate for r in p.readers}
        for i, block in enumerate(family.blocks(model)):
            for name, layer in family.linears(block).items():
                W = weight_matrix(layer)
                g = migrated.get(id(layer))
                Wm = W.float() * g.to(W.device) if g is not None else W.float()
                Q = quantize_weight(Wm, self.spec).dequantize()
                W.copy_((Q / g.to(W.device) if g is not None else Q).to(W.dtype))
                self.account(i, name, rows=W.shape[0], cols=W.shape[1])

    def set_ranges(self, points, ranges: dict[str, tuple[float, float]]) -> None:
        for p in points:
            lo, hi = self.bounds[p.name]
            lo.data.fill_(ranges[p.name][0])
            hi.data.fill_(ranges[p.name][1])

    def attach(self, p: Point) -> None:
        """Fake-quantize the point from now on with its (learnable) static range."""
        lo, hi = self.bounds.setdefault(p.name, (torch.zeros(()), torch.zeros(())))

        def fq(x):
            return fake_quant_range(x, lo.to(x.device), hi.to(x.device), self.abits, self.ste).to(x.dtype)
        if p.is_norm:
            g = p.gamma if self.migrate else None
            hook = (lambda _m, _a, out: fq(out)) if g is None else \
                (lambda _m, _a, out: fq(out / g.to(out.device, out.dtype)) * g.to(out.device, out.dtype))
            attach(p.module, "act_quant", hook, pre=False)
        else:
            attach(p.module, "act_quant", lambda _m, a: (fq(a[0]), *a[1:]))

    def summary(self) -> dict[str, Any]:
        ranges = {k: [float(lo), float(hi)] for k, (lo, hi) in self.bounds.items()}
        return {**super().summary(), "abits": self.abits, "act_mode": "per_tensor_static_asym",
                "gamma_migration": self.migrate, **self.facts, "activation_ranges": ranges}
