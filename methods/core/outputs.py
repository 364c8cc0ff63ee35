"""What a task model's output holds, read the same way everywhere."""
from __future__ import annotations

import torch


def task_logits(out) -> tuple[torch.Tensor, ...]:
    """The prediction logits of a task model's output: (start, end) for extractive QA, else (logits,)."""
    if getattr(out, "logits", None) is not None:
        return (out.logits,)
    return (out.start_logits, out.end_logits)
