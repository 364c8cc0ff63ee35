"""PEQA (Kim et al., 2023) [68]: parameter-efficient and quantization-aware adaptation. Every
block linear is quantized once, round-to-nearest, to b-bit integer codes with one scale and
zero point per output channel (or group); fine-tuning then trains only the scales:

    W₀ ≈ s ⊙ (Q − z)            Q, z frozen integers;  s ∈ R^{out × groups} trained
    everything else (embeddings, norms, the head, biases) frozen

so that the deployed model is exactly the b-bit model with task-adapted scales. Table 5's row:
LLaMA-65B, 3 bits per channel against fp16 (1 − 3/16 = 81.3%)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.wrapped_linears import ComputedLinear, unwrap_block_linears, wrap_block_linears
from methods.core.base import TableRow, TrainedMethod, TrainingInputs, register
from methods.quantization.base import QuantLedger
from methods.quantization.quantizer import quantize_weight
from methods.core.settings import Bits, GroupSize


class ScaledCodes(ComputedLinear):
    """y = x (s ⊙ (Q − z))ᵀ + b with integer codes Q and zeros z frozen and the scales s a parameter."""

    def __init__(self, linear: nn.Linear, spec):
        super().__init__()
        qt = quantize_weight(linear.weight.detach(), spec)
        self.group_size, self.cols = qt.group_size, linear.in_features
        self.register_buffer("codes", qt.codes)
        self.register_buffer("zero", qt.zero.to(linear.weight.dtype))
        self.scale = nn.Parameter(qt.scale.to(linear.weight.dtype))
        self.scale.no_decay = True
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def weight(self) -> torch.Tensor:
        g = self.group_size
        s = self.scale.repeat_interleave(g, dim=1)[:, : self.cols]
        z = self.zero.repeat_interleave(g, dim=1)[:, : self.cols]
        return s * (self.codes.to(s.dtype) - z)


@register("peqa")
class PEQA(QuantLedger, TrainedMethod):
    """`wbits`, `group_size` (−1: per output channel), asymmetric min-max initial quantization."""
    smoke = ({},)

    uses_teacher = False
    roles = ("decoder", "encoder")
    rows = {"table5": TableRow("PEQA", "68", uniform="UQ", cost="high", columns={"preset": "peqa"})}

    def __init__(self, wbits: Bits = 3, group_size: GroupSize | None = -1, nominal_base: int = 16, preset: str = "peqa"):
        super().__init__(wbits, False, group_size, None, "minmax", nominal_base)
        self.preset = preset

    def check_family(self, family, config=None) -> None:
        pass

    def wrap(self, model: nn.Module, family) -> dict[str, ScaledCodes]:
        """Codes for every block linear; every parameter but the scales frozen."""
        model.requires_grad_(False)
        return wrap_block_linears(model, family, lambda key, layer: ScaledCodes(layer, self.spec), "PEQA")

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        from methods.training.objectives import prediction_loss
        wrapped = self.wrap(model, family)
        model.to(device)
        inputs.fit(model, lambda s, t, batch: prediction_loss(s, None, 0.0, 1.0))  # only the scales require grad
        for key, m in wrapped.items():
            i, name = key.split(".", 1)
            self.account(int(i), name, *m.codes.shape, n_groups=m.scale.shape[1])
        unwrap_block_linears(model, family, wrapped)
        return model.eval()

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "preset": self.preset, "trained": "scales only"}
