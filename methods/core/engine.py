"""The sequential layer-by-layer driver (the GPTQ/SparseGPT reference structure, batched).

1. Run the calibration windows through the embeddings and capture the first block's inputs.
2. For each block: hook its linears, forward the calibration batches to gather statistics,
   let the method compress each linear, then recompute the block's outputs with the
   compressed weights: they are the next block's inputs.
Only the current block has to sit on the compute device, so a model larger than the
accelerator still compresses (`offload`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from methods.core import stats as stats_mod
from methods.core.arch import Family
from methods.core.base import LayerwiseMethod
from methods.core.calibration import CalibrationData
from methods.core.hooks import forward_hooks
from methods.core.progress import bar

# (hidden states, (other positional args, keyword args)) of one calibration batch
Batch = tuple[torch.Tensor, tuple[tuple, dict[str, Any]]]


class _StopForward(Exception):
    """Ends a forward pass early once the inputs it was run for have been seen."""


class _Catcher(nn.Module):
    """Stands in for block 0: records its inputs, then stops the forward pass."""

    def __init__(self, block: nn.Module, sink: list[Batch]):
        super().__init__()
        self.block, self.sink = block, sink

    def forward(self, hidden_states, *args, **kwargs):
        self.sink.append((hidden_states, (args, kwargs)))
        raise _StopForward


def _move_outside_blocks(model: nn.Module, blocks: nn.ModuleList, device: torch.device) -> None:
    """Move every parameter and buffer except the blocks' to `device` (embeddings, norms, rotary)."""
    inside = {id(t) for t in list(blocks.parameters()) + list(blocks.buffers())}
    for mod in model.modules():
        for key, p in mod._parameters.items():
            if p is not None and id(p) not in inside:
                p.data = p.data.to(device)
        for key, b in mod._buffers.items():
            if b is not None and id(b) not in inside:
                mod._buffers[key] = b.to(device)


@dataclass
class Session:
    """Calibration state of one compression run, shared by the engine and a method's `plan`."""

    model: nn.Module
    family: Family
    device: torch.device
    inputs: list[Batch] = field(default_factory=list)
    progress: bool = True

    @property
    def blocks(self) -> nn.ModuleList:
        return self.family.blocks(self.model)

    @torch.inference_mode()
    def capture(self, calib: CalibrationData, batch_size: int) -> None:
        """Store block 0's inputs (hidden states + other arguments) for the calibration data: token
        windows (n, seqlen), or ready batches of model inputs (encoders: ids, masks, token types)."""
        blocks = self.blocks
        home = next(self.model.parameters()).device
        _move_outside_blocks(self.model, blocks, self.device)
        first = blocks[0]
        blocks[0] = _Catcher(first, self.inputs)
        try:
            for batch in calib.forward_batches(batch_size):
                try:
                    self.model(**{k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()})
                except _StopForward:
                    pass
        finally:
            blocks[0] = first
            _move_outside_blocks(self.model, blocks, home)

    def forward_block(self, block: nn.Module, inputs: list[Batch]) -> list[Batch]:
        with torch.inference_mode():
            out = []
            for hidden, (args, kwargs) in inputs:
                y = block(hidden, *args, **kwargs)
                out.append((y[0] if isinstance(y, tuple) else y, (args, kwargs)))
            return out

    def walk(self, visit: Callable[[int, nn.Module, list[Batch]], None], desc: str,
             propagate_changed: bool = True) -> None:
        """Call `visit(index, block, inputs)` for each block in order, each on the compute device,
        then feed its outputs to the next block: those of the changed block, or with
        `propagate_changed=False` those it had before `visit`. Leaves `self.inputs` intact."""
        inputs = self.inputs
        for i, block in enumerate(bar(self.blocks, desc=desc, enabled=self.progress)):
            home = next(block.parameters()).device
            block.to(self.device)
            last = i + 1 == len(self.blocks)
            outputs = None if propagate_changed or last else self.forward_block(block, inputs)
            visit(i, block, inputs)
            if not last:
                inputs = self.forward_block(block, inputs) if outputs is None else outputs
            block.to(home)

    def gather(self, block: nn.Module, layers: dict[str, nn.Module], kinds: frozenset[str],
               inputs: list[Batch]) -> dict[str, stats_mod.LinearStats]:
        """Statistics of `layers`' inputs over the calibration batches.

        Two savings over the reference loop, neither changing a number: layers fed the very
        same tensor (q/k/v, gate/up) share one accumulator, and each forward stops as soon
        as every hooked layer has seen its input (the rest of the block is not needed)."""
        found: dict[str, stats_mod.LinearStats] = {}
        aliases: set[str] = set()
        fired: dict[str, torch.Tensor] = {}

        def pre_hook(name: str):
            def hook(_module, args):
                x = args[0]
                if name not in found:
                    twin = next((n for n, t in fired.items() if t is x), None)
                    if twin is None:
                        found[name] = stats_mod.LinearStats(x.shape[-1], kinds, x.device)
                    else:
                        found[name] = found[twin]
                        aliases.add(name)
                if name not in aliases:
                    found[name].add_batch(x)
                fired[name] = x
                if len(fired) == len(layers):
                    raise _StopForward
            return hook

        with forward_hooks(pre=[(layer, pre_hook(n)) for n, layer in layers.items()]), torch.inference_mode():
            for hidden, (args, kwargs) in inputs:
                fired.clear()
                try:
                    block(hidden, *args, **kwargs)
                except _StopForward:
                    pass
                if len(fired) != len(layers):
                    raise RuntimeError(f"linears {sorted(set(layers) - set(fired))} saw no input")
        return found


def compress(model: nn.Module, family: Family, method: LayerwiseMethod, calib: CalibrationData | None,
             device: torch.device, batch_size: int = 8, progress: bool = True) -> dict[str, float]:
    """Compress `model` with a layer-wise method, in place; returns the seconds of each phase:
    `capture_s` (block 0's calibration inputs), `plan_s` (a method's pass before compression) and
    `blocks_s` (the block-by-block loop)."""
    if method.needs_calibration and calib is None:
        raise ValueError(f"method '{method.name}' needs calibration data")
    t0 = time.perf_counter()
    session = Session(model, family, device, progress=progress)
    if method.needs_calibration:
        session.capture(calib, batch_size)
    t1 = time.perf_counter()
    method.plan(session)
    t2 = time.perf_counter()

    def visit(i: int, block: nn.Module, inputs: list[Batch]) -> None:
        method.compress_block(session, i, block, inputs)

    with torch.no_grad():
        session.walk(visit, desc=f"compress[{method.name}]", propagate_changed=method.propagate_compressed)
    return {"capture_s": t1 - t0, "plan_s": t2 - t1, "blocks_s": time.perf_counter() - t2}
