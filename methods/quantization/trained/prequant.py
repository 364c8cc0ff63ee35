"""PreQuant (Gong et al., 2023) [46]: quantize the *pre-trained* model once, before any task
fine-tuning, then fine-tune only a few outlier-related parameters:

    1. outlier-aware quantization of every block linear: b-bit symmetric per output row, each
       row's clipping range the one minimising its quantization error (outliers do not set it)
    2. outlier dimensions: the input channels of each linear with the largest activations on
       training batches (the few hidden dimensions where BERT's outliers live)
    3. fine-tune on the task: only the full-precision columns of those channels (and the new
       task head) train; every other weight stays the frozen b-bit code

Stored: the codes, one fp16 scale per row, and the outlier columns in fp16. Table 4's row:
RoBERTa-large at 4 bits, 1 − 4/32 = 87.5%.

Deviations: the outlier channels are found per linear from activation magnitudes (the paper
locates them in the pre-trained weights' statistics); biases and LayerNorms stay frozen."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from methods.core.wrapped_linears import ComputedLinear, block_linears, unwrap_block_linears, wrap_block_linears
from methods.core.base import TableRow, TrainedMethod, TrainingInputs, register
from methods.core.hooks import forward_hooks
from methods.quantization.base import QuantLedger
from methods.quantization.quantizer import FP16_BITS, quantize_weight
from methods.core.calibration import to_device
from methods.training.objectives import prediction_loss
from methods.core.settings import Bits, Count, Fraction


class OutlierTunedLinear(ComputedLinear):
    """y = x Wᵀ + b, W the frozen dequantized codes except the `idx` input columns, which are a
    full-precision parameter."""

    def __init__(self, linear: nn.Linear, spec, idx: torch.Tensor):
        super().__init__()
        w = linear.weight.detach()
        self.register_buffer("wq", quantize_weight(w, spec).dequantize().to(w.dtype))
        self.register_buffer("idx", idx)
        self.outliers = nn.Parameter(w[:, idx].clone())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def weight(self) -> torch.Tensor:
        return self.wq.index_copy(1, self.idx, self.outliers)


@register("prequant")
class PreQuant(QuantLedger, TrainedMethod):
    """`wbits`; `outlier_ratio`: the share of each linear's input channels kept trainable in
    full precision; `probe_batches`: training batches whose activations locate them."""
    smoke = ({"outlier_ratio": 0.125, "probe_batches": 2},)

    uses_teacher = False
    from_pretrained = True
    rows = {"table4": TableRow("PreQuant", "46", uniform="UQ", cost="high", columns={"preset": "prequant"})}

    def __init__(self, wbits: Bits = 4, outlier_ratio: Fraction = 1 / 64, probe_batches: Count = 4,
                 nominal_base: int | None = 32, preset: str = "prequant"):
        super().__init__(wbits, True, -1, "channel", "mse", nominal_base)
        if not 0 < outlier_ratio < 1:
            raise ValueError(f"outlier_ratio must lie in (0, 1), got {outlier_ratio}")
        if probe_batches < 1:
            raise ValueError(f"probe_batches must be >= 1, got {probe_batches}")
        self.outlier_ratio, self.probe_batches, self.preset = outlier_ratio, probe_batches, preset
        self.tuned_params = 0

    @torch.no_grad()
    def outlier_channels(self, model: nn.Module, family, inputs: TrainingInputs, device) -> dict[str, torch.Tensor]:
        """Per block linear, the input channels with the largest |activation| on training batches."""
        layers = block_linears(model, family, "PreQuant")
        peak = {k: torch.zeros(m.in_features, device=device) for k, m in layers.items()}

        def hook(key):
            def fn(_m, args):
                x = args[0].detach().abs().reshape(-1, args[0].shape[-1])
                torch.maximum(peak[key], x.amax(0).float(), out=peak[key])
            return fn
        model.eval()
        with forward_hooks(pre=[(m, hook(k)) for k, m in layers.items()]):
            for b in inputs.data(0)[:self.probe_batches]:
                model(**to_device(b, device))
        return {k: torch.topk(p, max(1, math.ceil(self.outlier_ratio * p.numel()))).indices.sort().values
                for k, p in peak.items()}

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        model.to(device)
        idx = self.outlier_channels(model, family, inputs, device)
        model.requires_grad_(False)
        prefix = getattr(model, "base_model_prefix", "") + "."
        head = [p for n, p in model.named_parameters() if not n.startswith(prefix)]
        wrapped = wrap_block_linears(model, family, lambda key, layer: OutlierTunedLinear(layer, self.spec, idx[key]),
                                     "PreQuant")
        for p in head:
            p.requires_grad_(True)
        trainable = [m.outliers for m in wrapped.values()] + head
        self.tuned_params = sum(p.numel() for p in trainable)
        inputs.fit(model, lambda s, t, batch: prediction_loss(s, None, 0.0, 1.0), parameters=trainable)
        for key, m in wrapped.items():
            i, name = key.split(".", 1)
            rows, cols = m.wq.shape
            self.account(int(i), name, rows, cols, stat_bits=FP16_BITS,
                         extra_bits=rows * m.idx.numel() * (FP16_BITS - self.spec.bits))
        unwrap_block_linears(model, family, wrapped)
        return model.eval()

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "preset": self.preset, "outlier_ratio": self.outlier_ratio,
                "tuned_params": self.tuned_params, "start": "pre-trained (quantized before fine-tuning)",
                "deviations": ["outlier channels per linear from activation magnitudes",
                               "biases and LayerNorms frozen"]}
