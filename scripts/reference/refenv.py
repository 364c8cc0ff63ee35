"""What every reference runner does first, in the reference's own environment: parse
`--ref-src`, `--inputs` and `--out`, make the reference's `.cuda()` calls no-ops so it runs on a
CPU, and put its checkout on the import path."""
from __future__ import annotations

import argparse
import sys

import torch


def cpu_only() -> None:
    """The reference code calls .cuda() everywhere: make it a no-op so it runs on this CPU."""
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.empty_cache = lambda: None


def reference_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref-src", required=True, help="the reference checkout's import root")
    ap.add_argument("--inputs", required=True, help="what the compare script's `dump` wrote")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cpu_only()
    sys.path.insert(0, args.ref_src)
    return args
