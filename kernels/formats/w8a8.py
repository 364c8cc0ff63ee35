"""w8a8: symmetric 8-bit weights and 8-bit activations, the integer product in int32 by
torch._int_mm (CPU, CUDA): SmoothQuant's, ZeroQuant's and Q8BERT's W8A8. The only format of a
record that quantizes its activations too: any other such record gets no kernel, since a
weight-only figure would not be its speed."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels.formats.base import Case, NoKernel, WeightFormat, dense_bytes, register_format
from kernels.formats.int8 import single_group
from kernels.formats.quantized import QuantizedFormat, weight_only
from methods.quantization.act_quant import ACT_ATTR, ActQuantSpec, attach_act_quant
from methods.quantization.quantizer import QuantizedTensor, quantize_weight


class W8A8(WeightFormat):
    """Symmetric 8-bit weights (one scale per row) and 8-bit activations quantized on the fly as
    the layer's activation quantizer does (per token, or static per tensor): y = s_x · s_w ·
    (q_x · q_wᵀ), the integer product accumulated exactly in int32 by torch._int_mm. On CUDA
    the kernel wants more than 16 rows and K, N multiples of 8: the input is padded to that."""

    name, backend = "w8a8", "torch._int_mm (int8 x int8 -> int32)"

    def __init__(self, qt: QuantizedTensor, act: ActQuantSpec, device: torch.device):
        if qt.bits != 8 or not single_group(qt) or bool((qt.zero != 128).any()):
            raise ValueError("w8a8 takes symmetric 8-bit weight codes with one scale per row")
        if act.bits != 8:
            raise ValueError(f"w8a8 takes 8-bit activations, the layer quantizes them to {act.bits} bits")
        device = torch.device(device)
        super().__init__(*qt.shape, device)
        qt = qt.to(device)
        cuda = device.type == "cuda"
        self.k_pad = -qt.shape[1] % 8 if cuda else 0
        self.n_pad = -qt.shape[0] % 8 if cuda else 0
        q = F.pad(qt.codes.to(torch.int16) - 128, (0, self.k_pad, 0, self.n_pad)).to(torch.int8)
        self.q_t = q.t().contiguous()                      # (K, N): _int_mm's second operand
        self.scale = qt.scale[:, 0].float()
        self.act = act

    def matmul(self, x):
        q, sx = self.act.codes(x)   # in x's dtype, as the activation quantizer's hook computes them
        m = q.shape[0]
        pad_m = max(0, 17 - m) + (-max(m, 17) % 8) if self.device.type == "cuda" else 0
        if pad_m or self.k_pad:
            q = F.pad(q, (0, self.k_pad, 0, pad_m))
        acc = torch._int_mm(q.to(torch.int8), self.q_t)[:m, :self.out_features]
        sx = sx if isinstance(sx, float) else sx[:m].float()
        return (acc.float() * sx * self.scale).to(x.dtype)

    def dequantize(self):
        return self.q_t.t()[:self.out_features, :self.in_features].float() * self.scale[:, None]

    @property
    def weight_bytes(self):
        return self.out_features * self.in_features + 4 * self.scale.numel()


@register_format
@dataclass(frozen=True)
class W8A8Format(QuantizedFormat):
    name = "w8a8"
    order = 10
    sym = True
    one_width = 8
    quantizes_activations = True

    @classmethod
    def for_record(cls, comp):
        if comp.get("kind") != "quantized" or weight_only(comp):
            return None
        bits = comp.get("wbits")
        if comp["abits"] == 8 and bits == 8 and comp.get("sym") and comp.get("quant_granularity") in ("tensor", "channel"):
            return cls(8)
        raise NoKernel(f"W{bits}A{comp['abits']}: the activations are quantized too, and kernels/ runs "
                       "them only as W8A8 with one weight scale per row; a weight-only figure would not be "
                       "this row's speed")

    def codes_format(self, qt, layer, path, device, dtype):
        act = getattr(layer, ACT_ATTR, None)
        if act is None:
            raise ValueError(f"{path} quantizes no activations: the record says W8A8")
        return W8A8(qt, act, device)

    def other_kernels(self, qt, layer, fmt, device, dtype):
        """GemLite's int8 GEMM, where the layer quantizes its activations per token as it does."""
        from kernels.formats.gemlite import GemLiteA8W8
        try:
            return [GemLiteA8W8(qt, fmt.act, device, dtype)]
        except (ValueError, ImportError, RuntimeError):
            return []

    def compress(self, layer):
        super().compress(layer)
        attach_act_quant(layer, 8, "per_token")   # SmoothQuant's and ZeroQuant's dynamic per-token activations

    def case(self, W, dtype):
        act = ActQuantSpec(8, "per_token")
        qt = quantize_weight(W, self.quant_spec())
        fmt = W8A8(qt, act, W.device)
        ref = qt.dequantize()
        return Case(fmt.matmul, ref, fmt.weight_bytes, 2 * W.numel(),
                    {"bandwidth": dense_bytes(W, dtype) / fmt.weight_bytes, "flops": 1.0}, fmt.backend,
                    expected=lambda x: act.fake(x).float() @ ref.t(), peak="int8",
                    routes=self.case_routes(self._kernels(qt, None, fmt, W.device, dtype)))
