"""SmoothQuant (Xiao et al., 2023): migrate activation outliers into the weights, then W8A8.

Algorithm (paper §4 / reference `smooth_lm`):
  for each norm -> linears pair (attention input, MLP input):
      s_j = max|X_j|^α / max|W_:,j|^(1-α)        (max over tokens; over all rows of all linears)
      norm weight /= s;   W_:,j *= s_j             (exact in full precision)
  then every linear: weights per-channel symmetric `wbits`, inputs `abits` per-token dynamic
  (or static per-tensor, ranges from calibration).
"""
from __future__ import annotations

import torch
from torch import nn

from methods.quantization.act_quant import attach_act_quant
from methods.core.arch import fold_scale, scale_pairs, weight_matrix
from methods.core.base import TableRow, register
from methods.quantization.base import QuantMethod
from methods.quantization.quantizer import quantize_weight
from methods.core.stats import ACT_ABSMAX
from methods.core.settings import Bits


def smoothing_scales(act_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    w_max = torch.stack([w.abs().amax(0) for w in weights]).amax(0).float().clamp(min=1e-5)
    return (act_absmax.float().clamp(min=1e-5).pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)


@register("smoothquant")
class SmoothQuant(QuantMethod):
    stats = frozenset({ACT_ABSMAX})
    rows = {"table5": TableRow("SmoothQuant", "157", uniform="UQ")}

    def __init__(self, alpha: float = 0.5, wbits: Bits = 8, abits: Bits = 8, act_mode: str = "per_token",
                 smooth: bool = True, nominal_base: int | None = None):
        super().__init__(wbits, sym=True, group_size=-1, nominal_base=nominal_base)
        if not 0 <= alpha <= 1:
            raise ValueError(f"SmoothQuant alpha must lie in [0, 1], got {alpha}")
        self.alpha, self.abits, self.act_mode, self.smooth = alpha, abits, act_mode, smooth

    def compress_block(self, session, block_index: int, block: nn.Module, inputs) -> None:
        linears = session.family.linears(block)
        found = session.gather(block, linears, self.stats, inputs)
        absmax = {n: found[n].act_absmax.clone() for n in linears}
        if self.smooth:
            for prev, group in scale_pairs(session.family, block, norms_only=True):
                s = smoothing_scales(absmax[group[0]], [weight_matrix(linears[n]) for n in group], self.alpha)
                fold_scale(block, prev, group, s)
                for n in group:
                    absmax[n] = absmax[n] / s
        for name, layer in linears.items():
            W = weight_matrix(layer)
            qt = quantize_weight(W, self.spec)
            W.copy_(qt.dequantize().to(W.dtype))
            self.store_codes(layer, qt)
            self.account(block_index, name, rows=W.shape[0], cols=W.shape[1])
            attach_act_quant(layer, self.abits, self.act_mode, float(absmax[name].max()))

    def summary(self):
        return {**super().summary(), "abits": self.abits, "act_mode": self.act_mode, "alpha": self.alpha}
