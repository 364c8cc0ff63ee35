"""Calibration data, one type per kind of model input, and the model-input keys.

- `TokenWindows`: token windows of a causal LM, (n, seqlen), sampled the GPTQ way.
- `InputBatches`: ready batches of task inputs with their targets (encoders: ids, masks, token
  types, answer positions or labels).
Both hand the engine the same thing: batches of keyword arguments for the model's forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """A batch (inputs and targets) with its tensors on `device`: the one place a batch moves."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def model_inputs(batch: dict[str, Any], device: torch.device | str | None = None) -> dict[str, Any]:
    """The model's forward arguments from a task batch (targets dropped), optionally moved."""
    return {k: (v.to(device) if device is not None else v) for k, v in batch.items() if k in MODEL_INPUT_KEYS}


def rebatch(batches: list[dict], size: int) -> list[dict]:
    """The same samples in mini-batches of `size`, in order (sequences padded with 0 to the longest
    of each mini-batch where batches differ in length)."""
    rows: list[dict] = []
    for b in batches:
        n = next(iter(b.values())).shape[0]
        rows += [{k: v[j] for k, v in b.items()} for j in range(n)]
    out = []
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        merged = {}
        for k in chunk[0]:
            vals = [r[k] for r in chunk]
            if vals[0].dim() == 1:
                width = max(v.shape[0] for v in vals)
                vals = [torch.nn.functional.pad(v, (0, width - v.shape[0])) for v in vals]
            merged[k] = torch.stack(vals)
        out.append(merged)
    return out


@dataclass(frozen=True)
class TokenWindows:
    """Calibration windows of a causal LM, shape (n, seqlen)."""

    ids: torch.Tensor

    def forward_batches(self, batch_size: int) -> list[dict[str, Any]]:
        return [{"input_ids": self.ids[i:i + batch_size], "use_cache": False}
                for i in range(0, self.ids.shape[0], batch_size)]


@dataclass(frozen=True)
class InputBatches:
    """Batches of task inputs with targets (already batched by the task)."""

    batches: list[dict[str, torch.Tensor]]

    def forward_batches(self, batch_size: int | None = None) -> list[dict[str, Any]]:
        return [model_inputs(b) for b in self.batches]


CalibrationData = Union[TokenWindows, InputBatches]
