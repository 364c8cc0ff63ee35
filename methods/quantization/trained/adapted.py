"""The driver shared by adaptor quantization (QLoRA, INT2.1): a frozen quantized base model with
LoRA adaptors on every block linear, trained on the task through `peft`, then merged.

    quantize the base (the method's quantizer: NF4, or OPTQ at 2 bits on calibration windows)
    y = x Ŵᵀ + (α / r) · x Aᵀ Bᵀ        Ŵ frozen; A, B trained (B starts at 0)
    fit: the LM loss (+ distill · KD toward the full-precision model: error correction)
    merge: Ŵ + (α/r) B A computes the same function (tested), and is what is evaluated

The stored model is the quantized base plus the adaptors in 16 bits, which the full-overhead rate
counts; the table's rate is the row's nominal count, `wbits` against `nominal_base`."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.adaptors import lora_params, lora_targets
from methods.core.base import CompressionResult, Kind, TrainedMethod, TrainingInputs
from methods.core.model_facts import ModelSize
from methods.quantization.base import QuantLedger
from methods.quantization.quantizer import FP16_BITS
from methods.core.settings import Bits, Count, Fraction, Positive


class AdaptedQuantBase(TrainedMethod):
    """`r`, `alpha`, `dropout`: the LoRA adaptors; `distill`: weight of logit KD from the
    full-precision model (0: the task loss alone, no teacher loaded)."""

    roles = ("decoder",)

    def __init__(self, wbits: Bits, r: Count, alpha: float, dropout: Fraction, distill: float, temperature: Positive,
                 nominal_base: int, preset: str):
        if r < 1:
            raise ValueError(f"adaptor rank r must be >= 1, got {r}")
        if distill < 0:
            raise ValueError(f"distill (the KD weight) must be >= 0, got {distill}")
        self.wbits, self.r, self.alpha, self.dropout = wbits, r, alpha, dropout
        self.distill, self.temperature, self.nominal_base, self.preset = distill, temperature, nominal_base, preset
        self.adaptor_params = 0

    @property
    def uses_teacher(self) -> bool:
        return self.distill > 0

    @property
    def ledger(self) -> QuantLedger:
        """Where the base quantizer accounted its storage."""
        raise NotImplementedError

    def check_family(self, family, config=None) -> None:
        pass

    def quantize_base(self, model: nn.Module, family, inputs: TrainingInputs | None, device: torch.device) -> None:
        raise NotImplementedError

    def attach(self, model: nn.Module, family):
        """Fresh LoRA adaptors on every block linear of the (already quantized) model: a peft model."""
        from peft import LoraConfig, get_peft_model
        cfg = LoraConfig(task_type="CAUSAL_LM", r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                         target_modules=lora_targets(family, model, every_linear=True), bias="none")
        return get_peft_model(model, cfg)

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        from methods.training.objectives import prediction_loss
        model.to(device)
        self.quantize_base(model, family, inputs, device)
        peft_model = self.attach(model, family)
        teacher = inputs.teacher if self.uses_teacher else None
        inputs.fit(peft_model, lambda s, t, batch: prediction_loss(s, t, self.distill, self.temperature),
                   teacher=teacher)
        self.adaptor_params = lora_params(peft_model)
        return peft_model.merge_and_unload().eval()

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        stored, weights = self.ledger.totals()
        return CompressionResult(Kind.QUANTIZED, "W", before, after,
                                 stored_bits=stored + self.adaptor_params * FP16_BITS, quantized_weights=weights,
                                 nominal_rate=1 - self.wbits / self.nominal_base, facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {**self.ledger.summary(), "wbits": self.wbits, "preset": self.preset, "r": self.r, "alpha": self.alpha,
                "dropout": self.dropout, "distill": self.distill, "adaptor_params": self.adaptor_params,
                "adaptor_bits": FP16_BITS, "nominal_base_bits": self.nominal_base,
                "evaluated": "adaptors merged (the same function)"}
