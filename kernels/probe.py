"""A first measurement of PyTorch's built-in accelerated formats at real LLM layer shapes, each as
a ratio against the dense bf16 (GPU) or fp32 (CPU) matmul timed in the same process, with the
device's measured ceilings (issue 14 builds the full kernel benchmark on it):

    int8 weight-only   torch._weight_int8pack_mm  (per-channel scales)
    int4 weight-only   torch._weight_int4pack_mm  (groups of 128, bf16 scales and zeros; CUDA)
    2:4 sparse         torch.sparse.to_sparse_semi_structured (CUDA)

Decode (M = 1, 16 tokens) is bounded by the weight bytes: its achieved fraction is the weight
bytes per second over the measured copy bandwidth. Prefill (M = 2048) is bounded by FLOPs: its
fraction is against the measured dense matmul peak (a 2:4 GEMM counts the half of the products it
computes, so its ceiling is a 2× speedup). Every kernel's output is checked against
its dequantized reference (max relative error, recorded).

    python kernels/probe.py [--out FILE] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kernels.ceiling import matmul_peak  # noqa: E402

SHAPES = {"llama-7b": [(4096, 4096), (11008, 4096), (4096, 11008)],
          "llama-70b": [(8192, 8192), (28672, 8192), (8192, 28672)]}
TOKENS = (1, 16, 2048)


def seconds(fn) -> float:
    """Median seconds of `fn()` (torch.utils.benchmark: warm-up, blocked autorange, synchronised)."""
    fn()
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.3).median


def copy_bandwidth(dev: torch.device) -> float:
    """Bytes/s of a device-to-device copy (read + write) of 1 GiB (64 MiB on a CPU)."""
    n = (1 << 30 if dev.type == "cuda" else 1 << 26) // 4
    a, b = torch.randn(n, device=dev), torch.empty(n, device=dev)
    return 2 * a.numel() * 4 / seconds(lambda: b.copy_(a))


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12))


def int8_case(x, w):
    scale = w.float().abs().amax(1) / 127
    q = torch.clamp(torch.round(w.float() / scale[:, None]), -127, 127).to(torch.int8)
    ref = F.linear(x.float(), q.float() * scale[:, None])
    s = scale.to(x.dtype)
    return (lambda: torch._weight_int8pack_mm(x, q, s)), ref, q.numel()


def int4_case(x, w, group: int = 128):
    n, k = w.shape
    g = w.float().reshape(n, k // group, group)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp_min(1e-8)
    q = torch.clamp(torch.round((g - lo) / scale), 0, 15)
    deq = (q * scale + lo).reshape(n, k)
    ref = F.linear(x.float(), deq)
    codes = q.reshape(n, k).to(torch.uint8)
    packed = torch._convert_weight_to_int4pack((codes[:, ::2] << 4 | codes[:, 1::2]).contiguous(), 8)
    # tinygemm's zero is the value at code 8: w = (q − 8)·s + z  ⇒  z = lo + 8·s
    sz = torch.stack([scale.squeeze(-1), (lo + 8 * scale).squeeze(-1)], -1).transpose(0, 1).contiguous().to(x.dtype)
    return (lambda: torch._weight_int4pack_mm(x, packed, group, sz)), ref, n * k // 2


def sparse24_case(x, w):
    from torch.sparse import to_sparse_semi_structured
    n, k = w.shape
    g = w.reshape(n, k // 4, 4)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.abs().topk(2, -1).indices, True)
    pruned = (g * keep).reshape(n, k)
    ref = F.linear(x.float(), pruned.float())
    ws = to_sparse_semi_structured(pruned)
    return (lambda: F.linear(x, ws)), ref, n * k // 2 * w.element_size() + n * k // 8


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true", help="one small shape (CI-sized)")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    peak, bw = matmul_peak(str(dev), dtype), copy_bandwidth(dev)
    report = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "cuda": torch.version.cuda, "dtype": str(dtype),
              "ceilings": {"matmul_flops": peak, "copy_bytes_per_s": bw}, "cases": []}
    shapes = {"smoke": [(256, 512)]} if args.smoke else SHAPES
    tokens = (1, 16) if args.smoke else TOKENS
    kinds = {"int8": int8_case, "int4_g128": int4_case, "2:4": sparse24_case}
    for model, layers in shapes.items():
        for n, k in layers:
            torch.manual_seed(0)
            w = (torch.randn(n, k, device=dev) * 0.02).to(dtype)
            for m in tokens:
                x = torch.randn(m, k, device=dev).to(dtype)
                dense_s = seconds(lambda: F.linear(x, w))
                for kind, make in kinds.items():
                    entry = {"model": model, "shape": [n, k], "tokens": m, "kind": kind, "dense_s": dense_s}
                    try:
                        fn, ref, weight_bytes = make(x, w)
                        entry["max_rel_err"] = rel_err(fn(), ref)
                        t = seconds(fn)
                        bound = "bandwidth" if m <= 16 else "flops"
                        flops = 2 * m * n * k / (2 if kind == "2:4" else 1)   # 2:4 skips half the products
                        achieved = weight_bytes / t / bw if bound == "bandwidth" else flops / t / peak
                        entry.update(seconds=t, speedup=dense_s / t, bound=bound, achieved_fraction=achieved,
                                     dense_fraction=(n * k * w.element_size() / dense_s / bw if bound == "bandwidth"
                                                     else 2 * m * n * k / dense_s / peak))
                    except Exception as err:  # noqa: BLE001 - a format this device or build lacks is recorded
                        entry.update(error=repr(err)[:300], trace=traceback.format_exc()[-600:])
                    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items() if k != "trace"},
                          flush=True)
                    report["cases"].append(entry)
    out = Path(args.out or f"results/bench/kernels-probe-{dev.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
