"""MREM (Bai et al., 2021) [6]: module-wise reconstruction error minimisation, post-training. The
network is cut into modules (here one Transformer block each); each module's quantized copy
learns to reproduce the full-precision module's output on a small calibration set:

    for each block (independently: teacher forcing, so blocks can run in parallel):
        inputs x: the full-precision model's hidden states entering the block
        min over latent weights W and step sizes s (LSQ)  ‖f̂_block(x) − f_block(x)‖²
        with Q_w: b_w-bit symmetric per output channel (learned step), Q_a: 8-bit per tensor
    then freeze: weights on their grid, activation ranges static

Because every block is fed the full-precision inputs (the paper's teacher forcing at its end
point), the blocks do not depend on each other: the engine visits them in order, but each fit
could run on its own device. Table 4's row: BERT-large W2A8, 2 bits against fp32 (93.8%).

Deviation: the paper anneals from teacher-forced to quantized inputs over the fit; this is its
fully teacher-forced form (the parallel one), recorded as such."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import TableRow, register
from methods.quantization.base import QuantMethod
from methods.quantization.codebooks import FP32_BITS
from methods.quantization.trained.fake_quant import ActQuant, FakeQuantLinear, UniformWeight, WeightQuantizer
from methods.core.settings import Bits, LearningRate
from methods.core.wrapped_linears import unwrap_block, wrap_block


@register("mrem")
class MREM(QuantMethod):
    """`wbits`, `abits`; `steps`, `lr`: the reconstruction fit of each block (Adam over the
    calibration batches, cycling)."""
    smoke = ({"steps": 20, "lr": 0.001},)

    rows = {"table4": TableRow("MREM", "6", uniform="UQ", columns={"preset": "mrem"})}
    stat_bits = FP32_BITS          # each learned step size is stored in full precision
    propagate_compressed = False   # the next block sees full-precision inputs: teacher forcing
    plans = True                   # needs calibration batches though it gathers no statistics

    def __init__(self, wbits: Bits = 2, abits: Bits = 8, steps: int = 200, lr: LearningRate = 1e-4, preset: str = "mrem",
                 nominal_base: int | None = 32):
        super().__init__(wbits, True, -1, "channel", "minmax", nominal_base)
        if steps < 1:
            raise ValueError(f"MREM needs at least one optimisation step per block, got steps={steps}")
        self.abits, self.steps, self.lr, self.preset = abits, steps, lr, preset
        self.fits: list[dict[str, float]] = []

    def weight_quantizer(self, weight: torch.Tensor) -> WeightQuantizer:
        """Q_w of one linear: b-bit symmetric per output channel, its step learned (LSQ)."""
        return UniformWeight(self.spec.bits, sym=True, per="channel", learn_scale=True, weight=weight)

    def fake_quant(self, name: str, linear: nn.Linear) -> FakeQuantLinear:
        """One linear's trainable form: Q_w with a learned step, Q_a at `abits` (none from 16 bits)."""
        return FakeQuantLinear(linear, self.weight_quantizer(linear.weight),
                               ActQuant(self.abits) if self.abits < 16 else None)

    def before_step(self, step: int, wrapped: dict[str, FakeQuantLinear]) -> None:
        """A hook into the fit (Mr.BiQ re-solves its scales at the start of each round)."""

    def compress_block(self, session, block_index: int, block: nn.Module, inputs) -> None:
        batches = [(h.clone(), _plain(args), _plain(kwargs)) for h, (args, kwargs) in inputs]
        with torch.no_grad():
            targets = [_out(block(h, *a, **k)).clone() for h, a, k in batches]
        wrapped = wrap_block(block, session.family, self.fake_quant, "MREM")
        params = [p for p in block.parameters()]
        with torch.enable_grad():
            block.train()
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.Adam(params, lr=self.lr)
            first = last = None
            for step in range(self.steps):
                self.before_step(step, wrapped)
                h, a, k = batches[step % len(batches)]
                loss = (_out(block(h, *a, **k)) - targets[step % len(batches)]).pow(2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                first = float(loss.detach()) if first is None else first
                last = float(loss.detach())
            block.eval()
            for p in params:
                p.requires_grad_(False)
        self.fits.append({"block": block_index, "mse_first_step": first, "mse_last_step": last})
        for name, m in wrapped.items():
            self.account(block_index, name, *m.weight.shape, n_groups=0,
                         extra_bits=m.weight_q.stats(m.weight) * self.stat_bits)
        unwrap_block(block, wrapped, restore=lambda m: m.freeze())

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "abits": self.abits if self.abits < 16 else None, "steps_per_block": self.steps,
                "lr": self.lr, "inputs": "full precision (teacher forcing)", "fits": self.fits, "preset": self.preset}


def _plain(x):
    """Normal copies of the captured tensors (inference-mode tensors cannot enter autograd)."""
    if torch.is_tensor(x):
        return x.clone()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    return x


def _out(y):
    return y[0] if isinstance(y, tuple) else y
