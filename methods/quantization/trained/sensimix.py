"""SensiMix (Piao et al., 2022) [114]: sensitivity-aware mixed precision, 8 bits where the model
is sensitive and 1 bit where it is not:

    8-bit encoder blocks:   every linear 8-bit (the paper's "8-bit index quantization")
    mixed (MP) blocks:      attention linears 8-bit, feed-forward linears 1-bit (α·sign(w), per row)
    which blocks are MP:    the `mp_blocks` least sensitive ones (by default as many as bring the
                            average code bits nearest `target_bits`), sensitivity measured as the rise
                            of the task loss when that block's feed-forward alone is binarized
                            (the paper finds the blocks near the input the most sensitive)
    training:               task loss (+ logit KD) + λ·ABWR, the absolute binary weight
                            regularizer that pulls every 1-bit latent |w| toward its row's α,
                            shrinking the binarization error: Σ_rows mean (|w| − mean|w|)²

Table 4's row: 87.5% against fp32, i.e. 4 bits on average (`target_bits: 4`); the rate here is the
average code bits of the actual mix (1 − avg bits/32), so it follows the model's shapes (on the
six-block MiniLM: five MP blocks, 4.11 bits, 87.2%).

Deviations: sensitivity measured on training batches (the paper fixes the split per model);
Prioritized Training and Inverse Layer-wise Fine-tuning (the paper's other two 1-bit training
schedules) are not implemented; the XNOR-count kernels are not (the speedup is not measured)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import TrainingInputs, register
from methods.quantization.trained.fake_quant import (ActQuant, BinaryWeight, UniformWeight,
                                                     WeightQuantizer)
from methods.quantization.trained.qat import QATMethod
from methods.core.calibration import to_device
from methods.training.objectives import prediction_loss
from methods.core.settings import BitBudget, Bits, Count, Positive


def abwr(weights: list[torch.Tensor]) -> torch.Tensor:
    """Absolute binary weight regularization: mean over rows of mean (|w| − mean|w|)², summed."""
    total = weights[0].new_zeros(())
    for w in weights:
        a = w.abs()
        total = total + (a - a.mean(1, keepdim=True)).pow(2).mean()
    return total


@register("sensimix")
class SensiMix(QATMethod):
    """`mp_blocks`: how many blocks get 1-bit feed-forwards (null: the count whose average code bits
    come nearest `target_bits`); `abwr`: the regularizer's weight; `probe_batches`: training
    batches for the sensitivity."""
    smoke = ({"probe_batches": 2},)

    def __init__(self, mp_blocks: int | None = None, target_bits: BitBudget = 4.0, abits: Bits = 8, abwr: float = 1.0,
                 probe_batches: Count = 4, distill: float = 1.0, temperature: Positive = 1.0, preset: str = "sensimix",
                 **kw: Any):
        if mp_blocks is not None and mp_blocks < 0:
            raise ValueError(f"mp_blocks must be >= 0, got {mp_blocks}")
        if not 1 <= target_bits <= 8:
            raise ValueError(f"target_bits lies between 1 (all 1-bit) and 8 (all 8-bit), got {target_bits}")
        if probe_batches < 1:
            raise ValueError(f"probe_batches must be >= 1, got {probe_batches}")
        kw.setdefault("deviations", ["MP blocks chosen by measured sensitivity on training batches",
                                     "no Prioritized Training or Inverse Layer-wise Fine-tuning",
                                     "word embedding kept in full precision"])
        super().__init__(preset=preset, label="SensiMix", ref="114", wbits=8, abits=abits, embeddings=False,
                         distill=distill, temperature=temperature, **kw)
        self.mp_blocks, self.target_bits, self.abwr, self.probe_batches = mp_blocks, target_bits, abwr, probe_batches
        self.binary: set[int] = set()
        self._ffn_names: set[str] = set()
        self.sensitivity: list[float] = []

    def check_family(self, family, config=None) -> None:
        if not family.mlp:
            raise ValueError(f"SensiMix binarizes the feed-forward linears, and the '{family.name}' family names "
                             "none (Family.mlp in methods/core/arch.py)")

    @staticmethod
    def _ffn(family) -> set[str]:
        """The feed-forward linears, as the family names them."""
        return set(family.mlp)

    def blocks_for_target(self, family, blocks: nn.ModuleList) -> int:
        """The number of MP blocks whose average code bits (8 everywhere, 1 in their feed-forwards)
        come nearest `target_bits`."""
        ffn = self._ffn(family)
        sizes = [(sum(m.weight.numel() for n, m in family.linears(b).items() if n in ffn),
                  sum(m.weight.numel() for m in family.linears(b).values())) for b in blocks]
        total = sum(t for _, t in sizes)

        def avg(n: int) -> float:   # the least sensitive blocks are not known yet: sizes are alike per block
            return (8 * total - 7 * sum(f for f, _ in sizes[:n])) / total
        return min(range(len(blocks) + 1), key=lambda n: abs(avg(n) - self.target_bits))

    @torch.no_grad()
    def measure_sensitivity(self, model: nn.Module, family, inputs: TrainingInputs, device) -> list[float]:
        """Task-loss rise per block when its feed-forward alone is binarized (per row, as trained)."""
        batches = [to_device(b, device) for b in inputs.data(0)[:self.probe_batches]]
        model.eval()

        def loss() -> float:
            return sum(float(model(**b).loss) for b in batches) / len(batches)
        base = loss()
        out = []
        for block in family.blocks(model):
            layers = family.linears(block)
            ffn = self._ffn(family)
            saved = {n: layers[n].weight.detach().clone() for n in ffn}
            for n in ffn:
                layers[n].weight.copy_(BinaryWeight("channel")(saved[n]))
            out.append(loss() - base)
            for n in ffn:
                layers[n].weight.copy_(saved[n])
        model.train()
        return out

    def weight_quantizer(self, key: str, weight: torch.Tensor) -> WeightQuantizer:
        block, name = key.split(".", 1)
        if int(block) in self.binary and name in self._ffn_names:
            return BinaryWeight(per="channel")
        return UniformWeight(8, sym=True, per="channel")

    def act_quantizer(self, key: str) -> ActQuant | None:
        return ActQuant(self.abits) if self.abits < 16 else None

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        blocks = family.blocks(model)
        n_mp = self.blocks_for_target(family, blocks) if self.mp_blocks is None else self.mp_blocks
        if n_mp > len(blocks):
            raise ValueError(f"mp_blocks={n_mp} exceeds the model's {len(blocks)} blocks")
        model.to(device)
        self.sensitivity = self.measure_sensitivity(model, family, inputs, device)
        self.binary = set(sorted(range(len(blocks)), key=lambda i: self.sensitivity[i])[:n_mp])
        self._ffn_names = self._ffn(family)
        wrapped = self.quantize(model, family)
        model.to(device)
        one_bit = [m.linear.weight for m in wrapped.values() if isinstance(m.weight_q, BinaryWeight)]

        def loss(s, t, batch):
            value, parts = prediction_loss(s, t, self.distill, self.temperature)
            if one_bit and self.abwr:
                reg = abwr(one_bit)
                value, parts["abwr"] = value + self.abwr * reg, reg.detach()
            return value, parts
        inputs.fit(model, loss, teacher=inputs.teacher if self.uses_teacher else None)
        self.freeze(model, family, wrapped)
        code_bits = [(m.weight_q.bits, m.weight.numel()) for m in wrapped.values()]
        self.wbits = sum(b * n for b, n in code_bits) / sum(n for _, n in code_bits)   # the mix's average
        self.facts.update(mp_blocks=sorted(self.binary), sensitivity=self.sensitivity, avg_code_bits=self.wbits)
        return model.eval()

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "target_bits": self.target_bits, "abwr": self.abwr,
                "probe_batches": self.probe_batches,
                "scheme": "8-bit blocks + MP blocks (8-bit attention, 1-bit feed-forward)"}
