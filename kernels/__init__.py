"""Accelerated kernels (sparse and quantized matmuls) and their timings; populated by the kernel work."""
