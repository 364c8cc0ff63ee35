"""Adaptors (Table 7, target A) through `peft`: LoRA (Hu et al. 2022) and AdaLoRA (Zhang et al.
2023). They start from the pre-trained model (not the fine-tuned one) with a fresh task head,
train only the adaptors and the head on the task, and are merged into the weights afterwards.

The survey's rate for these rows is the adaptors' size relative to the model: the low-rank
factors' parameters (AdaLoRA: the ranks left after its budget allocation, each r·(in + out) + r
for the singular values), divided by the model's parameters. The head is not counted."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from methods.core.adaptors import lora_params, lora_targets
from methods.core.base import (CompressionResult, Kind, RateBasis, TableRow, TrainedMethod, TrainingInputs,
                               register)
from methods.core.model_facts import ModelSize
from methods.core.settings import Count, Fraction, UnitInterval


def task_type(model: nn.Module) -> str:
    return "QUESTION_ANS" if hasattr(model, "qa_outputs") else "SEQ_CLS"


def adalora_params(model: nn.Module) -> int:
    """Parameters of AdaLoRA's SVD triplets that survive the budget: r·(in + out) + r per matrix,
    r the number of non-zero singular values (lora_E) left."""
    total = 0
    for module in model.modules():
        e = getattr(module, "lora_E", None)
        if not isinstance(e, nn.ParameterDict):
            continue
        for name, values in e.items():
            r = int((values != 0).sum())
            a, b = module.lora_A[name], module.lora_B[name]
            total += r * (a.shape[1] + b.shape[0]) + r
    return total


class _Adaptor(TrainedMethod):
    uses_teacher = False
    from_pretrained = True

    def __init__(self, r: Count, alpha: float, dropout: Fraction, targets: Sequence[str] | None, preset: str):
        if r < 1:
            raise ValueError(f"adaptor rank r must be >= 1, got {r}")
        self.r, self.alpha, self.dropout, self.targets, self.preset = r, alpha, dropout, targets, preset
        self.adaptor_params = 0

    def check_family(self, family, config=None) -> None:
        if self.targets is None and not family.adaptor_targets:
            raise ValueError(f"no default adaptor targets for a '{family.name}' model; set method.targets")

    def peft_config(self, model: nn.Module, family, total_steps: int):
        raise NotImplementedError

    def count(self, model: nn.Module) -> int:
        raise NotImplementedError

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        from peft import get_peft_model

        from methods.training.objectives import label_loss
        total = inputs.trainer.total_steps(len(inputs.data(0)))
        peft_model = get_peft_model(model, self.peft_config(model, family, total))
        on_step = getattr(self, "on_step", None)
        inputs.fit(peft_model, label_loss, on_step=(lambda step: on_step(peft_model, step)) if on_step else None)
        self.adaptor_params = self.count(peft_model)
        return peft_model.merge_and_unload().eval()

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        return CompressionResult(Kind.ADAPTOR, "A", before, after, rate_basis=RateBasis.ADAPTOR,
                                 comp_rate=self.adaptor_params / before.params, facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {"preset": self.preset, "r": self.r, "alpha": self.alpha, "dropout": self.dropout,
                "targets": list(self.targets) if self.targets else None, "adaptor_params": self.adaptor_params,
                "merged": True}


@register("lora")
class LoRA(_Adaptor):
    rows = {"table7": TableRow("LoRA", "60", cost="high", columns={"target": "A", "preset": "lora"})}

    def __init__(self, r: Count = 8, alpha: float = 16, dropout: Fraction = 0.1, targets: Sequence[str] | None = None,
                 preset: str = "lora"):
        super().__init__(r, alpha, dropout, targets, preset)

    def peft_config(self, model, family, total_steps):
        from peft import LoraConfig
        return LoraConfig(task_type=task_type(model), r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=lora_targets(family, model, self.targets))

    def count(self, model) -> int:
        return lora_params(model)


@register("adalora")
class AdaLoRA(_Adaptor):
    rows = {"table7": TableRow("AdaLoRA", "172", cost="high", columns={"target": "A", "preset": "adalora"})}

    def __init__(self, r: Count = 8, init_r: Count = 12, alpha: float = 32, dropout: Fraction = 0.1,
                 targets: Sequence[str] | None = None, tinit_frac: UnitInterval = 0.1, tfinal_frac: UnitInterval = 0.2,
                 delta_t: int = 10, beta1: float = 0.85, beta2: float = 0.85, orth_reg_weight: float = 0.1,
                 preset: str = "adalora"):
        super().__init__(r, alpha, dropout, targets, preset)
        if init_r < r:
            raise ValueError(f"AdaLoRA starts from init_r >= the target rank r; got init_r {init_r} < r {r}")
        self.init_r, self.tinit_frac, self.tfinal_frac, self.delta_t = init_r, tinit_frac, tfinal_frac, delta_t
        self.beta1, self.beta2, self.orth_reg_weight = beta1, beta2, orth_reg_weight

    def peft_config(self, model, family, total_steps):
        from peft import AdaLoraConfig
        return AdaLoraConfig(task_type=task_type(model), init_r=self.init_r, target_r=self.r, lora_alpha=self.alpha,
                             lora_dropout=self.dropout, target_modules=lora_targets(family, model, self.targets),
                             tinit=int(self.tinit_frac * total_steps), tfinal=int(self.tfinal_frac * total_steps),
                             deltaT=self.delta_t, beta1=self.beta1, beta2=self.beta2,
                             orth_reg_weight=self.orth_reg_weight, total_step=total_steps)

    @staticmethod
    def on_step(peft_model, step: int) -> None:
        peft_model.base_model.update_and_allocate(step)

    def count(self, model) -> int:
        return adalora_params(model)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "init_r": self.init_r, "tinit_frac": self.tinit_frac,
                "tfinal_frac": self.tfinal_frac, "delta_t": self.delta_t}
