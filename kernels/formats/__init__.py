"""Kernel formats, one module each, found by `formats()` (base.py says what a format owns):

    int8        symmetric per-channel codes   torch._weight_int8pack_mm (CPU, CUDA)
    w8a8        int8 weights and activations  torch._int_mm (CPU, CUDA)
    int4        4-bit codes, groups 32..256   torch._weight_int4pack_mm (CUDA) and _for_cpu
    packed      2..8-bit codes, any groups    the project's Triton kernel; elsewhere 'torch-dequant'
    sparse      unstructured zeros            torch.sparse.mm on a CSR matrix (fp32)
    2:4         two nonzeros in every 4       torch.sparse.to_sparse_semi_structured (CUDA)
    dense       the weight as it is           F.linear (structured pruning's smaller matrices;
                                              the benchmark's neurons-<p> and lowrank-<p>)

gemlite.py is no format: it is a library's kernel for the integer formats' codes, which
kernels/routing.py times against each format's own kernel, shape by shape.
"""
from kernels.formats.base import (Case, KernelFormat, NoKernel, Residual, WeightFormat, format_for, formats, parse,
                                  register_format)

__all__ = ["Case", "KernelFormat", "NoKernel", "Residual", "WeightFormat", "format_for", "formats", "parse",
           "register_format"]
