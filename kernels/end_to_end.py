"""A model's end-to-end speed, dense against kernel-converted, on the task's own inputs:
decoders, the prefill latency of one window and greedy decode tokens/s after a short prompt;
encoders, the forward time of the task's timing batches."""
from __future__ import annotations

from typing import Any

import torch

from kernels.timing import decode_tokens_per_s, prefill_seconds, seconds

DECODE_PROMPT, DECODE_TOKENS = 16, 32


def measure(model: torch.nn.Module, batches: list[dict], role: str, device: torch.device) -> dict[str, float]:
    model.eval()
    if role == "decoder":
        window = batches[0]["input_ids"][:1].to(device)
        return {"prefill_s": prefill_seconds(model, window),
                "decode_tokens_per_s": decode_tokens_per_s(model, window[:, :DECODE_PROMPT], DECODE_TOKENS),
                "prefill_tokens": int(window.shape[1]), "decode_tokens": DECODE_TOKENS}
    inputs = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]

    @torch.inference_mode()
    def forward():
        for b in inputs:
            model(**b)
    return {"forward_s": seconds(forward), "tokens": sum(int(b["input_ids"].numel()) for b in inputs)}


def speedups(dense: dict[str, float], converted: dict[str, float]) -> dict[str, Any]:
    """Ratios > 1 mean the kernels are faster: latency dense / converted, throughput converted / dense."""
    if "forward_s" in dense:
        return {"forward_speedup": dense["forward_s"] / converted["forward_s"]}
    return {"prefill_speedup": dense["prefill_s"] / converted["prefill_s"],
            "decode_speedup": converted["decode_tokens_per_s"] / dense["decode_tokens_per_s"]}
