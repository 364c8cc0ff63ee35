"""Simulated activation quantization on a linear's input (fake-quant in a forward pre-hook).

per_token: symmetric, one dynamic scale per token row (ZeroQuant's token-wise, SmoothQuant's
per-token). per_tensor: one static symmetric scale fixed from calibration (SmoothQuant's
static per-tensor setting)."""
from __future__ import annotations

import torch
from torch import nn

from methods.core.hooks import attach

MODES = ("per_token", "per_tensor")


def quantize_per_token(x: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    scale = x.abs().amax(-1, keepdim=True).clamp(min=1e-5) / qmax
    return (torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale).to(x.dtype)


def quantize_static(x: torch.Tensor, bits: int, absmax: float) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    scale = max(absmax, 1e-5) / qmax
    return (torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale).to(x.dtype)


def attach_act_quant(layer: nn.Module, bits: int, mode: str = "per_token", absmax: float | None = None) -> None:
    """Quantize this layer's input on every forward from now on (replaces an earlier hook)."""
    if mode not in MODES:
        raise ValueError(f"activation quantization mode must be one of {MODES}, got '{mode}'")
    if mode == "per_tensor" and absmax is None:
        raise ValueError("static per-tensor activation quantization needs a calibrated absmax")
    def hook(_module, args):
        x = args[0]
        xq = quantize_per_token(x, bits) if mode == "per_token" else quantize_static(x, bits, absmax)
        return (xq, *args[1:])

    attach(layer, "act_quant", hook)
