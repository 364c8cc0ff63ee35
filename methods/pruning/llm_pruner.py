"""LLM-Pruner (Ma et al., 2023): structural pruning of coupled groups by first-order importance.

Algorithm (paper §3 / reference, block-wise setting):
  1. dependency groups: each attention head unit (q/k/v rows + o columns) and each MLP
     channel (gate/up rows + down column) — see methods/pruning/structure.py
  2. importance from calibration gradients: I(group) = Σ_{w ∈ group} |w · ∂L/∂w|
     (element-wise first order, "param_first", aggregated by sum); `importance=magnitude`
     gives the magnitude baseline Σ w²
  3. in the pruned layers (`layers`: [start, end), default all), remove the least important
     units: the same number of heads per layer and MLP channels to reach `ratio` of the
     parameters (with or without embeddings, `count_embeddings`)
  4. optional LoRA recovery (peft) on the calibration text, merged back into the weights
The pruned model is physically smaller; `eval.models.save_compressed` writes it reloadably (`save_dir=`).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import CompressionResult, Kind, ModelMethod, TableRow, register
from methods.core.calibration import CalibrationData, TokenWindows
from methods.core.model_facts import ModelSize, count_params, embedding_params
from methods.pruning.structure import (plan_removal, remove_units, struct_spec, unfuse_gpt2, unit_params, unit_scores,
                                       units)
from methods.core.settings import Count, Fraction, LearningRate, Steps


def accumulate_gradients(model: nn.Module, windows: torch.Tensor, batch_size: int, device: torch.device) -> None:
    """∂L/∂w of the mean next-token loss over the calibration windows, left in `.grad`."""
    model.to(device)
    model.zero_grad(set_to_none=True)
    n = windows.shape[0]
    with torch.enable_grad():
        for i in range(0, n, batch_size):
            batch = windows[i:i + batch_size].to(device)
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss * batch.shape[0] / n
            loss.backward()


def lora_recovery(model: nn.Module, windows: torch.Tensor, steps: int, lr: float, rank: int, batch_size: int,
                  device: torch.device, seed: int = 0) -> nn.Module:
    """Train LoRA adapters on every block linear for `steps` steps, then merge them in."""
    from peft import LoraConfig, get_peft_model

    targets = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                      if isinstance(m, nn.Linear) and "lm_head" not in n})
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                                  target_modules=targets, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    peft_model.train()
    with torch.enable_grad():
        for _ in range(steps):
            batch = windows[torch.randint(0, windows.shape[0], (batch_size,), generator=g)].to(device)
            loss = peft_model(input_ids=batch, labels=batch, use_cache=False).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    peft_model.eval()
    return peft_model.merge_and_unload()


@register("llm_pruner")
class LLMPruner(ModelMethod):
    accepts = (TokenWindows,)  # gradients of the next-token loss on the calibration windows
    physical = True

    def __init__(self, ratio: Fraction = 0.2, importance: str = "taylor", layers: list[int] | None = None,
                 count_embeddings: bool = True, recovery_steps: Steps = 0, recovery_lr: LearningRate = 1e-4,
                 lora_rank: Count = 8, batch_size: Count = 4):
        if not 0 < ratio < 1:
            raise ValueError(f"pruning ratio must lie in (0, 1), got {ratio}")
        if importance not in ("taylor", "magnitude"):
            raise ValueError(f"importance must be 'taylor' or 'magnitude', got '{importance}'")
        self.ratio, self.importance, self.layers = ratio, importance, layers
        self.count_embeddings, self.batch_size = count_embeddings, batch_size
        self.recovery_steps, self.recovery_lr, self.lora_rank = recovery_steps, recovery_lr, lora_rank
        self.facts: dict[str, Any] = {}

    @property
    def needs_calibration(self) -> bool:
        return self.importance == "taylor" or self.recovery_steps > 0

    def check_model(self, linears, family=None) -> None:
        if family is not None:
            struct_spec(family)

    rows = {"table3": TableRow("LLM-Pruner", "105", "N,H")}

    def table_row(self, table: str) -> TableRow | None:
        if table in self.rows and self.importance == "magnitude":  # the magnitude baseline, same coupled groups
            return TableRow("Magnitude (N,H)", "", "N,H")
        return self.rows.get(table)

    def compress_model(self, model: nn.Module, family, calib: CalibrationData | None, device: torch.device,
                       batch_size: int = 4) -> nn.Module:
        windows = calib.ids if calib is not None else None
        spec = struct_spec(family)
        unfuse_gpt2(model, family)
        blocks = family.blocks(model)
        start, end = self.layers if self.layers else (0, len(blocks))
        pruned = list(range(start, end))
        head_dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
        total = count_params(model)
        base = total if self.count_embeddings else total - embedding_params(model)
        target = round(self.ratio * base)
        u = units(blocks[pruned[0]], spec, head_dim)
        head_p, chan_p = unit_params(blocks[pruned[0]], spec, u)
        n_heads, channels = plan_removal(len(pruned), u, head_p, chan_p, target)

        if self.importance == "taylor":
            accumulate_gradients(model, windows, self.batch_size, device)
            score = lambda m: (m.weight.data * m.weight.grad).abs()  # noqa: E731
        else:
            score = lambda m: m.weight.data.pow(2)  # noqa: E731
        removed_heads, removed_channels = [], []
        for i, n_ch in zip(pruned, channels):
            ub = units(blocks[i], spec, head_dim)
            heads, chans = unit_scores(blocks[i], spec, ub, score)
            drop_h = torch.argsort(heads)[:n_heads].tolist()
            drop_c = torch.argsort(chans)[:n_ch].tolist()
            remove_units(blocks[i], spec, ub, drop_h, drop_c)
            removed_heads.append(len(drop_h))
            removed_channels.append(len(drop_c))
        model.zero_grad(set_to_none=True)
        if self.recovery_steps:
            model = lora_recovery(model, windows, self.recovery_steps, self.recovery_lr, self.lora_rank,
                                  self.batch_size, device)
        self.facts = {"target_params_removed": target, "heads_removed_per_layer": removed_heads,
                      "channels_removed_per_layer": removed_channels, "pruned_layers": pruned,
                      "unit_params": {"head": head_p, "channel": chan_p}}
        return model

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        return CompressionResult(Kind.STRUCTURED, "N,H", before, after, facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {"ratio_target": self.ratio, "importance": self.importance,
                "count_embeddings": self.count_embeddings, "recovery_steps": self.recovery_steps, **self.facts}
