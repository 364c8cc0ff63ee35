"""Simulated activation quantization on a linear's input (fake-quant in a forward pre-hook).

per_token: symmetric, one dynamic scale per token row (ZeroQuant's token-wise, SmoothQuant's
per-token). per_tensor: one static symmetric scale fixed from calibration (SmoothQuant's
static per-tensor setting)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from methods.core.hooks import attach

MODES = ("per_token", "per_tensor")
ACT_ATTR = "act_quant_spec"   # what a layer's activation quantizer does, for kernels.convert


@dataclass(frozen=True)
class ActQuantSpec:
    bits: int
    mode: str                     # per_token (dynamic) | per_tensor (static)
    absmax: float | None = None   # the static range

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Integer codes of x (as floats) and their scale: x̂ = codes · scale."""
        qmax = 2 ** (self.bits - 1) - 1
        if self.mode == "per_token":
            scale = x.abs().amax(-1, keepdim=True).clamp(min=1e-5) / qmax
        else:
            scale = max(self.absmax, 1e-5) / qmax
        return torch.clamp(torch.round(x / scale), -qmax - 1, qmax), scale

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        q, scale = self.codes(x)
        return (q * scale).to(x.dtype)


def quantize_per_token(x: torch.Tensor, bits: int) -> torch.Tensor:
    return ActQuantSpec(bits, "per_token").fake(x)


def quantize_static(x: torch.Tensor, bits: int, absmax: float) -> torch.Tensor:
    return ActQuantSpec(bits, "per_tensor", absmax).fake(x)


def attach_act_quant(layer: nn.Module, bits: int, mode: str = "per_token", absmax: float | None = None) -> None:
    """Quantize this layer's input on every forward from now on (replaces an earlier hook)."""
    if mode not in MODES:
        raise ValueError(f"activation quantization mode must be one of {MODES}, got '{mode}'")
    if mode == "per_tensor" and absmax is None:
        raise ValueError("static per-tensor activation quantization needs a calibrated absmax")
    spec = ActQuantSpec(bits, mode, absmax)

    def hook(_module, args):
        return (spec.fake(args[0]), *args[1:])

    attach(layer, "act_quant", hook)
    setattr(layer, ACT_ATTR, spec)
