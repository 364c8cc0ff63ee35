"""Perplexity by the GPTQ protocol: non-overlapping windows of `seqlen` tokens over the whole
token stream, the remainder dropped, exp of the mean next-token negative log-likelihood."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from methods.core.progress import bar

PPL_LIMIT = 1e4  # above this (or NaN/inf) a result is flagged, never averaged into a table


def windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """(n, seqlen) non-overlapping windows of the 1-D stream `ids`; the tail is dropped."""
    n = ids.numel() // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"token stream of {ids.numel()} tokens is shorter than seqlen={seqlen}")
    return ids[: n * seqlen].view(n, seqlen)


@torch.inference_mode()
def perplexity(model, ids: torch.Tensor, seqlen: int, batch_size: int = 8,
               max_windows: int | None = None, device: torch.device | str = "cpu",
               progress: bool = True, desc: str = "ppl") -> dict:
    """Evaluate `model` on `ids`; returns ppl, mean NLL, window and token counts, and flags."""
    wins = windows(ids, seqlen, max_windows)
    nll = torch.zeros((), dtype=torch.float64)
    for i in bar(range(0, wins.shape[0], batch_size), desc=desc, enabled=progress):
        batch = wins[i:i + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits
        for b in range(batch.shape[0]):  # one sequence at a time bounds the fp32 copy of the logits
            nll += F.cross_entropy(logits[b, :-1].float(), batch[b, 1:], reduction="sum").double().cpu()
    tokens = wins.shape[0] * (seqlen - 1)
    mean_nll = float(nll) / tokens
    ppl = math.exp(mean_nll) if math.isfinite(mean_nll) and mean_nll < 700 else float("inf")
    flags = []
    if not math.isfinite(ppl):
        flags.append("nonfinite")
    elif ppl > PPL_LIMIT:
        flags.append("ppl_above_1e4")
    return {"ppl": ppl, "nll": mean_nll, "windows": int(wins.shape[0]), "tokens": tokens,
            "seqlen": seqlen, "flags": flags}
