"""Row-wise Fisher information of linears from task gradients (FWSVD, Hsu et al. 2022):
I_W = Σ_batches (∂L/∂W)², summed over each output row."""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from methods.core.calibration import to_device


def row_fisher(model: nn.Module, layers: Mapping[str, nn.Linear], batches: Iterable[dict],
               device: torch.device) -> dict[str, torch.Tensor]:
    """{name: (out,) row sums of the squared gradients of the task loss}, one backward per batch
    (the empirical Fisher of the batch loss, as the reference implementation accumulates it)."""
    fisher = {name: torch.zeros(lin.weight.shape[0], dtype=torch.float64, device=device)
              for name, lin in layers.items()}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model as it is evaluated
    for batch in batches:
        model.zero_grad(set_to_none=True)
        out = model(**to_device(batch, device))
        if out.loss is None:
            raise ValueError("FWSVD needs task labels in the training batches to take gradients")
        out.loss.backward()
        for name, layer in layers.items():
            fisher[name] += layer.weight.grad.double().pow(2).sum(1)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return fisher
