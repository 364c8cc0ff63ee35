"""Quantization-aware training: the driver every QAT method shares.

    wrap every block linear: y = Q_a(x) Q_w(W)ᵀ + b        (the method picks Q_w, Q_a)
    optionally the word embedding: E ↦ Q_e(E)               (a parametrization, same STE)
    fit on the task (labels, + logit KD, or the method's layer-wise distillation)
    freeze: W ← Q_w(W) on the grid (its integer codes kept where the grid is uniform), Q_a becomes
            a static hook; account the stored bits

The rate is counted as the survey's rows count it: `wbits` against full precision
(`nominal_base`, 32 bits for the encoder rows), e.g. 1 − 2/32 = 93.8% for TernaryBERT; the
record keeps the full-overhead rate beside it (codes plus every stored scale, the word
embedding included when quantized).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from methods.core.base import CompressionResult, Kind, TableRow, TrainingInputs
from methods.core.model_facts import ModelSize
from methods.quantization.base import StorageLedger
from methods.quantization.codebooks import FP32_BITS
from methods.quantization.trained.fake_quant import (ActQuant, FakeQuantLinear, WeightQuantizer, freeze_linears,
                                                     wrap_linears)
from methods.training.row_method import RowMethod
from methods.core.settings import Bits, Positive


class QATMethod(StorageLedger, RowMethod):
    """`wbits`/`abits`: the code bits of weights and activations (abits ≥ 16: weights only);
    `embeddings`: quantize the word embedding too; `distill`: weight of logit KD from the
    fine-tuned teacher (0: labels only, no teacher loaded)."""

    roles = ("encoder",)

    def __init__(self, preset: str, label: str, ref: str, uniform: str = "UQ", wbits: Bits = 8, abits: Bits = 8,
                 embeddings: bool = True, distill: float = 0.0, temperature: Positive = 1.0,
                 nominal_base: int | None = FP32_BITS, deviations: Sequence[str] = (),
                 tables: Sequence[str] = ("table4",)):
        RowMethod.__init__(self, preset, label, ref, distill, temperature, deviations, tables)
        self.uniform, self.wbits, self.abits, self.embeddings = uniform, wbits, abits, embeddings
        self._open_ledger(nominal_base)

    def row(self) -> TableRow:
        return TableRow(self.lab, self.ref, uniform=self.uniform, cost="high", columns={"preset": self.preset})

    def check_family(self, family, config=None) -> None:
        pass

    # -- what the method chooses ------------------------------------------------------------
    def weight_quantizer(self, key: str, weight: torch.Tensor) -> WeightQuantizer:
        raise NotImplementedError

    def act_quantizer(self, key: str) -> ActQuant | None:
        return ActQuant(self.abits) if self.abits < 16 else None

    def make_linear(self, key: str, linear: nn.Linear) -> FakeQuantLinear:
        """The fake-quant form of the block linear `key` ('<block>.<name>')."""
        return FakeQuantLinear(linear, self.weight_quantizer(key, linear.weight), self.act_quantizer(key))

    def embedding_quantizer(self, weight: torch.Tensor) -> WeightQuantizer:
        return self.weight_quantizer("embeddings", weight)

    def train(self, model: nn.Module, family, inputs: TrainingInputs) -> None:
        """Fine-tune the fake-quantized model: task loss (+ distill · logit KD)."""
        from methods.training.objectives import prediction_loss
        inputs.fit(model, lambda s, t, batch: prediction_loss(s, t, self.distill, self.temperature),
                   teacher=inputs.teacher if self.uses_teacher else None)

    # -- the driver ---------------------------------------------------------------------------
    def quantize(self, model: nn.Module, family) -> dict[str, FakeQuantLinear]:
        """Fake quantization on every block linear (and the word embedding): the model to train."""
        wrapped = wrap_linears(model, family, self.make_linear)
        if self.embeddings:
            emb = model.get_input_embeddings()
            parametrize.register_parametrization(emb, "weight", self.embedding_quantizer(emb.weight))
        return wrapped

    @torch.no_grad()
    def freeze(self, model: nn.Module, family, wrapped: dict[str, FakeQuantLinear]) -> None:
        """Weights onto their grid for good; every quantized matrix's storage into the ledger."""
        for key, m in wrapped.items():
            block, name = key.split(".", 1)
            self.account(int(block), name, *m.weight.shape, bits=m.weight_q.bits, n_groups=0,
                         extra_bits=m.weight_q.stats(m.weight) * FP32_BITS)
        grids = [m.weight_q.grid() for m in wrapped.values()]
        if grids and all(g is not None and g == grids[0] for g in grids):   # one uniform grid: a format may fit
            self.facts.update(grids[0])
        freeze_linears(model, family, wrapped)
        if self.embeddings:
            emb = model.get_input_embeddings()
            q = emb.parametrizations.weight[0]
            stats = q.stats(emb.parametrizations.weight.original)
            parametrize.remove_parametrizations(emb, "weight", leave_parametrized=True)
            self.account(-1, "word_embeddings", *emb.weight.shape, bits=q.bits, n_groups=0,
                         extra_bits=stats * FP32_BITS)

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        wrapped = self.quantize(model, family)
        model.to(device)
        self.train(model, family, inputs)
        self.freeze(model, family, wrapped)
        return model.eval()

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        stored, weights = self.totals()
        return CompressionResult(Kind.QUANTIZED, "W", before, after, stored_bits=stored, quantized_weights=weights,
                                 nominal_rate=1 - self.wbits / self.nominal_base if self.nominal_base else None,
                                 facts=self.summary())

    def summary(self) -> dict[str, Any]:
        stored, weights = self.totals()
        out = {"preset": self.preset, "wbits": self.wbits, "abits": self.abits if self.abits < 16 else None,
               "embeddings_quantized": self.embeddings, "distill": self.distill, "nominal_base_bits": self.nominal_base,
               "deviations": self.deviations, **self.facts}
        if weights:
            out["bits_per_weight"] = stored / weights
        return out
