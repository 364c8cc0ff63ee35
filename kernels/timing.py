"""The end-to-end latencies of a model: prefill of a prompt and greedy decode steps with the KV
cache, timed by `methods.core.hardware.seconds`."""
from __future__ import annotations

import torch

from methods.core.hardware import seconds


@torch.inference_mode()
def prefill_seconds(model: torch.nn.Module, ids: torch.Tensor, min_run_time: float = 0.2) -> float:
    """Latency of one forward over `ids` (batch, tokens), no cache kept."""
    return seconds(lambda: model(input_ids=ids, use_cache=False), min_run_time)


@torch.inference_mode()
def decode_tokens_per_s(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int = 32,
                        min_run_time: float = 0.2) -> float:
    """Greedy decode throughput (batch × new tokens per second) after a `prompt` prefill: the time
    of prefill + `new_tokens` steps minus the time of the prefill alone, both measured here."""
    def generate():
        out = model(input_ids=prompt, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(new_tokens):
            out = model(input_ids=tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        return tok

    total = seconds(generate, min_run_time)
    prefill = seconds(lambda: model(input_ids=prompt, use_cache=True), min_run_time)
    return prompt.shape[0] * new_tokens / max(total - prefill, 1e-9)
