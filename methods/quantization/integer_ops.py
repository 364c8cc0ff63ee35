"""I-BERT's integer-only kernels (Kim et al., 2021), simulated: each takes an integer tensor q with
its scale S (the real value is q·S) and returns an integer tensor with its scale, using only
integer additions, multiplications, floors and shifts on q (the constants fold the scale in).
Integers are carried in float64 tensors (exact below 2^53), and every floor passes gradients
straight through, as in I-BERT's quantization-aware fine-tuning.

    i-poly(q, S; a, b, c)  a(x + b)² + c  = S_out · ((q + ⌊b/S⌋)² + ⌊c / (aS²)⌋),  S_out = aS²
    i-erf(q, S)            sgn(x)·[a(min(|x|, −b) + b)² + 1],   a = −0.2888, b = −1.769
    i-GELU(q, S)           x · ½(1 + erf(x/√2))
    i-exp(q, S), q ≤ 0     x = −z·ln2 + p:  exp(p) ≈ 0.3585(p + 1.353)² + 0.344, then ≫ z
    i-softmax(q, S)        i-exp(q − max q), normalised by an integer division to `out_bits` bits
    i-sqrt(n)              ⌊√n⌋ by Newton's iteration x ← ⌊(x + ⌊n/x⌋)/2⌋
    i-LayerNorm(q)         (q − mean) · ⌊2^31 / i-sqrt(var)⌋ / 2, scale √d / 2^30
"""
from __future__ import annotations

import math

import torch


def ste_floor(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x.detach()) + (x - x.detach())


def to_int(x: torch.Tensor, bits: int, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """x as `bits`-bit symmetric integers (float64) with one scale for the tensor (its absmax, over
    `mask` where given)."""
    ref = x.detach() if mask is None else x.detach()[mask]
    absmax = float(ref.abs().max()) if ref.numel() else 1.0
    s = max(absmax, 1e-8) / (2 ** (bits - 1) - 1)
    xd = x.double() / s
    return torch.round(xd.detach()) + (xd - xd.detach()), s


def i_poly(q: torch.Tensor, s: float, a: float, b: float, c: float) -> tuple[torch.Tensor, float]:
    q_b = math.floor(b / s)
    q_c = math.floor(c / (a * s * s))
    return (q + q_b) ** 2 + q_c, a * s * s


def i_erf(q: torch.Tensor, s: float) -> tuple[torch.Tensor, float]:
    a, b = -0.2888, -1.769
    q_b = math.floor(b / s)
    q_abs = torch.clamp(q.abs(), max=-q_b)
    q_l, s_l = i_poly(q_abs, s, a, b, 1.0)
    return torch.sign(q) * q_l, s_l


def i_gelu(q: torch.Tensor, s: float) -> tuple[torch.Tensor, float]:
    q_erf, s_erf = i_erf(q, s / math.sqrt(2))
    q_one = math.floor(1.0 / s_erf)
    return q * (q_erf + q_one), s * s_erf / 2


def i_exp(q: torch.Tensor, s: float) -> tuple[torch.Tensor, float]:
    """exp of q·S for q ≤ 0."""
    q_ln2 = math.floor(math.log(2) / s)
    z = ste_floor(-q / q_ln2).clamp(max=60)
    q_p = q + z * q_ln2
    q_l, s_l = i_poly(q_p, s, 0.3585, 1.353, 0.344)
    return ste_floor(q_l / torch.pow(2.0, z.detach())), s_l


def i_softmax(q: torch.Tensor, s: float, keep: torch.Tensor | None = None, out_bits: int = 8
              ) -> tuple[torch.Tensor, float]:
    """Softmax over the last dimension; `keep`: the positions that take part (others get 0)."""
    if keep is not None:
        q = torch.where(keep, q, q.detach().amin())
    q = q - q.detach().amax(-1, keepdim=True)
    q_exp, _ = i_exp(q, s)
    if keep is not None:
        q_exp = q_exp * keep
    factor = torch.floor(2.0 ** 32 / q_exp.detach().sum(-1, keepdim=True).clamp_min(1))
    return ste_floor(q_exp * factor / 2.0 ** (32 - out_bits)), 1.0 / 2 ** out_bits


def i_sqrt(n: torch.Tensor) -> torch.Tensor:
    """⌊√n⌋ of non-negative integers (float64 tensor), by Newton's iteration from above."""
    n = n.detach()
    bits = torch.ceil(torch.log2(n.clamp_min(1) + 1))
    x = torch.pow(2.0, torch.ceil(bits / 2))
    for _ in range(40):
        y = torch.floor((x + torch.floor(n / x)) / 2)
        if bool((y >= x).all()):
            break
        x = torch.minimum(x, y)
    return torch.where(n > 0, x, torch.zeros_like(x))


def i_layernorm(q: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(q − mean)/std over the last dimension in integers; returns (y, scale) with y·scale ≈ the
    normalised value (before the affine)."""
    d = q.shape[-1]
    mean = torch.round(q.detach().mean(-1, keepdim=True))
    y = q - mean
    var = (y.detach() ** 2).sum(-1, keepdim=True)
    std = i_sqrt(var).clamp_min(1)
    factor = torch.floor(2.0 ** 31 / std)
    return ste_floor(y * factor / 2), math.sqrt(d) / 2 ** 30
