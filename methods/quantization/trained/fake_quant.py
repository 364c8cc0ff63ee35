"""Fake quantization for training: quantizers whose rounding passes gradients straight through,
and the linear that trains its latent full-precision weight through them.

    ŵ = Q_w(w),  x̂ = Q_a(x),  y = x̂ ŵᵀ + b          (forward: on the grid)
    ∂L/∂w = ∂L/∂ŵ (· 1[w inside the range])           (backward: straight through, Bengio 2013)

Weight quantizers (each returns ŵ of w's shape):
  uniform   b-bit symmetric or affine, per tensor / output row / group; the range observed from
            the current weights (min-max) or learned (LSQ: the scale is a parameter)
  ternary   TWN (Li & Liu 2016): Δ = 0.7·mean|w|, α = mean{|w| : |w| > Δ}, ŵ = α·sign(w)·1[|w| > Δ]
  binary    ŵ = α·sign(w), α = mean|w| (per tensor or row)
Activation quantizer: b-bit symmetric, per tensor, its range the exponential moving average of
the batches' absmax during training (Q8BERT, TernaryBERT) and fixed at the end, or dynamic per
token.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from methods.core.wrapped_linears import LinearWrapper, unwrap_block_linears, wrap_block_linears
from methods.quantization.act_quant import attach_act_quant
from methods.quantization.quantizer import QuantizedTensor, keep_codes
from methods.core.settings import GroupSize, Positive


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward (exactly: x − x.detach() is 0), identity backward."""
    return torch.round(x.detach()) + (x - x.detach())


def _rows(w: torch.Tensor, per: str, group_size: int) -> torch.Tensor:
    """w viewed as the rows that share one scale: the whole tensor, each output row, or groups
    of `group_size` inputs within a row."""
    if per == "tensor":
        return w.reshape(1, -1)
    if per == "channel":
        return w.reshape(w.shape[0], -1)
    if w.shape[-1] % group_size:
        raise ValueError(f"group_size {group_size} does not divide the weight's {w.shape[-1]} inputs")
    return w.reshape(-1, group_size)


class WeightQuantizer(nn.Module):
    """w ↦ ŵ on the quantizer's grid; `bits`: code bits per weight; `stats(w)`: how many full-precision
    statistics (scales, zeros) it stores for w."""

    bits: float = 32

    def stats(self, w: torch.Tensor) -> int:
        return 1

    def quantized_tensor(self, w: torch.Tensor) -> QuantizedTensor | None:
        """w's integer codes in the form kernels.convert packs, where the grid is uniform integer;
        None for any other grid (ternary, binary, codebooks)."""
        return None

    def grid(self) -> dict[str, Any] | None:
        """The grid's facts a kernel format reads from a record (`sym`, `quant_granularity`), or None."""
        return None


class UniformWeight(WeightQuantizer):
    """b-bit uniform: codes q ∈ [0, 2^b − 1] (symmetric: [−2^(b−1)+1, 2^(b−1)−1], zero at 0), ŵ = s·(q − z).
    `learn_scale`: s is a parameter initialised from the first weights' range (LSQ); otherwise s
    follows the current weights' min-max (Q8BERT's max|w|/127)."""

    def __init__(self, bits: int, sym: bool = True, per: str = "tensor", group_size: GroupSize = 128,
                 learn_scale: bool = False, weight: torch.Tensor | None = None):
        super().__init__()
        if not 2 <= bits <= 8:
            raise ValueError(f"uniform weight quantization takes 2..8 bits, got {bits}")
        if per not in ("tensor", "channel", "group"):
            raise ValueError(f"per must be tensor, channel or group, got '{per}'")
        self.bits, self.sym, self.per, self.group_size = bits, sym, per, group_size
        self.scale = None
        if learn_scale:
            if weight is None:
                raise ValueError("a learned scale is initialised from the weight")
            s, z = self.observe(weight.detach())
            self.scale = nn.Parameter(s)
            self.scale.no_decay = True
            self.register_buffer("zero", z)

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if self.sym else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.sym else 2 ** self.bits - 1

    @torch.no_grad()
    def observe(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero) per row of `_rows(w)`, from its min-max (the range always holds 0)."""
        r = _rows(w.float(), self.per, self.group_size)
        if self.sym:
            s = r.abs().amax(1, keepdim=True).clamp_min(1e-8) / self.qmax
            return s, torch.zeros_like(s)
        lo, hi = r.amin(1, keepdim=True).clamp(max=0), r.amax(1, keepdim=True).clamp(min=0)
        s = ((hi - lo) / self.qmax).clamp_min(1e-8)
        return s, torch.round(-lo / s)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        s, z = (self.scale, self.zero) if self.scale is not None else self.observe(w)
        r = _rows(w, self.per, self.group_size)
        return torch.clamp(torch.round(r / s.detach()) + z, self.qmin, self.qmax).view_as(w)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s, z = (self.scale, self.zero) if self.scale is not None else self.observe(w)
        r = _rows(w, self.per, self.group_size)
        # clamp after the straight-through round: weights outside the range get no gradient, and
        # a learned scale gets LSQ's gradient (round(w/s) − w/s inside, the clip level outside)
        q = torch.clamp(ste_round(r / s) + z, self.qmin, self.qmax)
        return ((q - z) * s).view_as(w)

    def stats(self, w: torch.Tensor) -> int:
        rows = _rows(w, self.per, self.group_size).shape[0]
        return rows * (1 if self.sym else 2)

    @torch.no_grad()
    def quantized_tensor(self, w: torch.Tensor) -> QuantizedTensor:
        """The codes of `forward(w)` as a QuantizedTensor: unsigned (symmetric codes shifted by
        2^(b−1), the zero point with them), one scale and zero per row and group; it dequantizes
        to `forward(w)` exactly."""
        s, z = (self.scale, self.zero) if self.scale is not None else self.observe(w)
        rows, cols = w.shape
        shift = 2 ** (self.bits - 1) if self.sym else 0
        codes = (self.codes(w) + shift).to(torch.uint8)
        n_groups = 1 if self.per != "group" else cols // self.group_size
        scale = s.detach().float().reshape(-1, n_groups).expand(rows, n_groups).clone()
        zero = (z.float() + shift).reshape(-1, n_groups).expand(rows, n_groups).clone()
        return QuantizedTensor(codes, scale, zero, cols if self.per != "group" else self.group_size, self.bits)

    def grid(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sym": self.sym, "quant_granularity": self.per}
        if self.per == "group":
            out["group_size"] = self.group_size
        return out


class TernaryWeight(WeightQuantizer):
    """TWN ternarisation (TernaryBERT's approximation-based quantizer), per tensor or row."""

    bits = 2

    def __init__(self, per: str = "tensor", ratio: Positive = 0.7):
        super().__init__()
        self.per, self.ratio = per, ratio

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        r = _rows(w, self.per, 0)
        a = r.detach().abs()
        delta = self.ratio * a.mean(1, keepdim=True)
        keep = (a > delta).to(w.dtype)
        alpha = (a * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp_min(1)
        hard = alpha * torch.sign(r.detach()) * keep
        return (hard + (r - r.detach())).view_as(w)

    def stats(self, w: torch.Tensor) -> int:
        return _rows(w, self.per, 0).shape[0]


class BinaryWeight(WeightQuantizer):
    """ŵ = α·sign(w), α = mean|w| per tensor or row; gradient straight through inside |w| ≤ 1."""

    bits = 1

    def __init__(self, per: str = "tensor"):
        super().__init__()
        self.per = per

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        r = _rows(w, self.per, 0)
        alpha = r.detach().abs().mean(1, keepdim=True)
        hard = alpha * torch.where(r.detach() >= 0, 1.0, -1.0).to(w.dtype)
        inside = r.clamp(-1, 1)
        return (hard + (inside - inside.detach())).view_as(w)

    def stats(self, w: torch.Tensor) -> int:
        return _rows(w, self.per, 0).shape[0]


class ActQuant(nn.Module):
    """b-bit symmetric activation fake-quant. `ema`: one range per tensor, the moving average of
    the training batches' absmax (frozen in eval); `dynamic`: per token, from the token itself."""

    def __init__(self, bits: int = 8, mode: str = "ema", momentum: float = 0.9):
        super().__init__()
        if mode not in ("ema", "dynamic"):
            raise ValueError(f"activation range mode must be ema or dynamic, got '{mode}'")
        self.bits, self.mode, self.momentum = bits, mode, momentum
        self.register_buffer("absmax", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "dynamic":
            s = x.detach().abs().amax(-1, keepdim=True).clamp_min(1e-5) / self.qmax
        else:
            if self.training:
                with torch.no_grad():
                    now = x.detach().abs().max().float()
                    self.absmax.copy_(torch.where(self.seen, self.momentum * self.absmax + (1 - self.momentum) * now,
                                                  now))
                    self.seen.fill_(True)
            s = self.absmax.clamp_min(1e-5) / self.qmax
        return torch.clamp(ste_round(x / s), -self.qmax - 1, self.qmax) * s

    def attach_to(self, linear: nn.Linear) -> None:
        """The frozen form: the same quantization as a forward pre-hook on the plain linear."""
        if self.mode == "dynamic":
            attach_act_quant(linear, self.bits, "per_token")
        else:
            attach_act_quant(linear, self.bits, "per_tensor", float(self.absmax))


class FakeQuantLinear(LinearWrapper):
    """y = Q_a(x) Q_w(W)ᵀ + b, W the latent full-precision weight the optimizer updates."""

    def __init__(self, linear: nn.Linear, weight_q: WeightQuantizer, act_q: ActQuant | None = None):
        super().__init__(linear)
        self.weight_q, self.act_q = weight_q, act_q

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_q(self.linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_q is not None:
            x = self.act_q(x)
        return F.linear(x, self.quantized_weight(), self.linear.bias)

    @torch.no_grad()
    def freeze(self) -> nn.Linear:
        """The plain linear holding ŵ (and the activation quantizer as a hook), with ŵ's integer
        codes kept for kernels.convert where the grid is uniform."""
        qt = self.weight_q.quantized_tensor(self.linear.weight)
        self.linear.weight.copy_(self.quantized_weight())
        if qt is not None:
            keep_codes(self.linear, qt)
        if self.act_q is not None:
            self.act_q.attach_to(self.linear)
        return self.linear

    def unwrap(self) -> nn.Linear:
        return self.freeze()


def wrap_linears(model: nn.Module, family,
                 make: Callable[[str, nn.Linear], FakeQuantLinear]) -> dict[str, FakeQuantLinear]:
    """Replace every block linear by `make('<block>.<name>', linear)`; keys '<block>.<name>'."""
    return wrap_block_linears(model, family, make, "fake quantization")


def freeze_linears(model: nn.Module, family, wrapped: dict[str, FakeQuantLinear]) -> None:
    """Put the frozen plain linears (weights on the grid) back in place."""
    unwrap_block_linears(model, family, wrapped)
