"""A model's end-to-end speed, dense against kernel-converted, on the task's own inputs:
decoders, the prefill latency of one window and greedy decode tokens/s after a short prompt;
encoders, the forward time of the task's timing batches."""
from __future__ import annotations

from typing import Any

import torch

from kernels.timing import decode_tokens_per_s, prefill_seconds
from methods.core.calibration import to_device
from methods.core.hardware import seconds

DECODE_PROMPT, DECODE_TOKENS = 16, 32


def measure(model: torch.nn.Module, batches: list[dict], role: str, device: torch.device,
            min_run_time: float = 0.2) -> dict[str, float]:
    model.eval()
    if role == "decoder":
        window = batches[0]["input_ids"][:1].to(device)
        return {"prefill_s": prefill_seconds(model, window, min_run_time),
                "decode_tokens_per_s": decode_tokens_per_s(model, window[:, :DECODE_PROMPT], DECODE_TOKENS,
                                                           min_run_time),
                "prefill_tokens": int(window.shape[1]), "decode_tokens": DECODE_TOKENS}
    inputs = [to_device(b, device) for b in batches]

    @torch.inference_mode()
    def forward():
        for b in inputs:
            model(**b)
    return {"forward_s": seconds(forward, min_run_time), "tokens": sum(int(b["input_ids"].numel()) for b in inputs)}


def fastest(*runs: dict[str, float]) -> dict[str, float]:
    """Metric by metric, the best of several measurements of one model (the dense baseline is
    timed before and after the formats: a machine that slowed down meanwhile never flatters them)."""
    out = dict(runs[0])
    for r in runs[1:]:
        for k, v in r.items():
            if k.endswith("_s"):
                out[k] = min(out[k], v)
            elif k.endswith("_per_s"):
                out[k] = max(out[k], v)
    return out


def interleaved(dense: torch.nn.Module, converted: torch.nn.Module, batches: list[dict], role: str,
                device: torch.device, repeats: int) -> dict[str, Any]:
    """`measure` of the dense and the converted model, alternately, `repeats` times: every pass of
    both, and the per-pass speedups' median and quartiles (methods/core/speedup.py). The table's figure is
    the decode throughput ratio for decoders, the forward time ratio for encoders."""
    from methods.core.speedup import paired
    passes: dict[str, list[dict[str, float]]] = {"dense": [], "converted": []}
    for _ in range(repeats):
        passes["dense"].append(measure(dense, batches, role, device))
        passes["converted"].append(measure(converted, batches, role, device))
    d, c = passes["dense"], passes["converted"]
    if role == "decoder":
        ratios = {"prefill": paired([x["prefill_s"] for x in d], [x["prefill_s"] for x in c]),
                  "decode": paired([x["decode_tokens_per_s"] for x in d], [x["decode_tokens_per_s"] for x in c],
                                   higher_is_faster=True)}
        headline, metric = "decode", "decode tokens/s at batch 1, converted / dense"
    else:
        ratios = {"forward": paired([x["forward_s"] for x in d], [x["forward_s"] for x in c])}
        headline, metric = "forward", "forward time of the timing batches, dense / converted"
    return {"dense": d[0] | {"passes": d}, "converted": c[0] | {"passes": c},
            **{f"{k}_speedup": v["median"] for k, v in ratios.items()},
            "speedup": {**ratios[headline], "metric": metric}, "ratios": ratios}


def speedups(dense: dict[str, float], converted: dict[str, float]) -> dict[str, Any]:
    """Ratios > 1 mean the kernels are faster: latency dense / converted, throughput converted / dense."""
    if "forward_s" in dense:
        return {"forward_speedup": dense["forward_s"] / converted["forward_s"]}
    return {"prefill_speedup": dense["prefill_s"] / converted["prefill_s"],
            "decode_speedup": converted["decode_tokens_per_s"] / dense["decode_tokens_per_s"]}


@torch.no_grad()
def compress_for(model: torch.nn.Module, key: str) -> None:
    """Give `model`'s compressible linears the format `key` in place, as a method would leave them
    (round-to-nearest codes kept on each linear; magnitude or 2:4 zeros), ready for convert."""
    from kernels.formats import parse
    from methods.core.arch import family_of

    fmt = parse(key)
    if not fmt.swaps:    # the model's own dense matrices are the format
        return
    family = family_of(model.config.model_type)
    for block in family.blocks(model):
        for layer in family.linears(block).values():
            fmt.compress(layer)
