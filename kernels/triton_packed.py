"""The project's Triton kernel for `methods.quantization.quantizer.pack`'s layout: y = x · Wᵀ with
W[n, k] = s[n, g[k]] · (q[n, k] − z[n, g[k]]), q a 2..8-bit code.

Layout (exactly what `pack` writes): the (N, K) codes, row-major, flattened; word i of the int32
array holds codes i·P … i·P + P − 1 (P = 32 // bits), code j at bit (j mod P)·bits. Rows need not
start on a word boundary, so any K works. `g` (the act-order group of each column, GPTQ's g_idx)
is read per column, so a permuted group order costs one gathered load per K-tile.

Each program computes a BLOCK_M × BLOCK_N tile of y: per K-tile it loads the x tile, gathers the
words of the BLOCK_K × BLOCK_N codes, shifts and masks them, dequantizes in registers with the
column's group scale and zero, and accumulates x_tile · w_tile with `tl.dot` in fp32 (operands
in x's dtype: fp16/bf16 on a GPU). With TRITON_INTERPRET=1 the same kernel runs on the CPU
(Triton's interpreter): that is how CI checks it. The interpreter gets bf16 arithmetic wrong
(Triton 3.9: a bf16 `tl.dot` or product returns garbage; casts are right), so there bf16
operands are cast to fp32 before the dot; the GPU path multiplies in bf16.
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch; CPU CI installs it
    triton = None


def available(device: torch.device) -> bool:
    """Whether the kernel can run on `device` (a GPU, or the CPU through Triton's interpreter)."""
    if triton is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:
    @triton.jit
    def _packed_matmul_kernel(x_ptr, words_ptr, scale_ptr, zero_ptr, gidx_ptr, y_ptr,
                              M, N, K, G, stride_xm, stride_xk, stride_ym, stride_yn,
                              BITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                              BLOCK_K: tl.constexpr, UPCAST: tl.constexpr):
        PER: tl.constexpr = 32 // BITS
        MAXQ: tl.constexpr = (1 << BITS) - 1
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok = offs_m < M
        n_ok = offs_n < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K
            a = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                        mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            flat = offs_n[None, :].to(tl.int64) * K + offs_k[:, None]          # (BLOCK_K, BLOCK_N)
            wk_ok = k_ok[:, None] & n_ok[None, :]
            word = tl.load(words_ptr + flat // PER, mask=wk_ok, other=0)
            code = (word >> ((flat % PER) * BITS).to(tl.int32)) & MAXQ
            grp = tl.load(gidx_ptr + offs_k, mask=k_ok, other=0)
            stat = offs_n[None, :] * G + grp[:, None]
            s = tl.load(scale_ptr + stat, mask=wk_ok, other=0.0)
            z = tl.load(zero_ptr + stat, mask=wk_ok, other=0.0)
            w = (code.to(tl.float32) - z.to(tl.float32)) * s.to(tl.float32)
            if UPCAST:   # Triton's CPU interpreter computes bf16 products wrongly: fp32 there
                acc += tl.dot(a.to(tl.float32), w)
            else:
                acc += tl.dot(a, w.to(a.dtype))
        tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
                 acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def blocks(m: int, device: torch.device) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K): 16-row tiles for decode (tl.dot's minimum), 64 for prefill;
    small tiles under the interpreter, which runs them one by one in Python."""
    if device.type != "cuda":
        return 16, 32, 32
    return (16, 64, 128) if m <= 16 else (64, 64, 64)


def packed_matmul(x: torch.Tensor, words: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                  g_idx: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """y (M, n) = x (M, K) · dequant(words)ᵀ; scale/zero (n, G) in x's dtype or fp32, g_idx (K,) int32."""
    if triton is None:
        raise RuntimeError("the packed-code kernel needs Triton: pip install triton (CUDA builds of torch ship it)")
    if not 2 <= bits <= 8:
        raise ValueError(f"packed codes are 2..8 bits, got {bits}")
    m, k = x.shape
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    bm, bn, bk = blocks(m, x.device)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    _packed_matmul_kernel[grid](x, words, scale, zero, g_idx, y, m, n, k, scale.shape[1],
                                x.stride(0), x.stride(1), y.stride(0), y.stride(1),
                                BITS=bits, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                                UPCAST=x.device.type != "cuda" and x.dtype == torch.bfloat16)
    return y
