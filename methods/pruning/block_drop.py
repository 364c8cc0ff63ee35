"""Whole-block removal. `rule=influence`: by input/output similarity (ShortGPT's Block
Influence), BI_l = 1 − mean_tokens cos(x_l, y_l) on calibration data, computed on the dense model
block by block, the `n_blocks` blocks with the lowest BI deleted. `rule=top`: the top
`n_blocks` blocks deleted (Sajjad et al.'s top-layer dropping; no data needed)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import CompressionResult, Kind, ModelMethod, TableRow, register
from methods.core.calibration import CalibrationData
from methods.core.model_facts import ModelSize
from methods.core.surgery import delete_blocks
from methods.core.settings import Count


def block_influence(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.reshape(-1, x.shape[-1]).float(), y.reshape(-1, y.shape[-1]).float()
    return float(1 - torch.nn.functional.cosine_similarity(x, y, dim=-1).mean())


@register("block_drop")
class BlockDrop(ModelMethod):
    physical = True

    def __init__(self, n_blocks: Count = 1, rule: str = "influence"):
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        if rule not in ("influence", "top"):
            raise ValueError(f"block_drop rule must be 'influence' or 'top', got '{rule}'")
        self.n_blocks, self.rule = n_blocks, rule
        self.influence: list[float] = []
        self.dropped: list[int] = []

    @property
    def needs_calibration(self) -> bool:
        return self.rule == "influence"

    def check_model(self, linears, family=None) -> None:
        n = len({name.split(".")[0] for name in linears})
        if linears and self.n_blocks >= n:  # encoder runs check before loading: see compress_model
            raise ValueError(f"cannot drop {self.n_blocks} of {n} blocks")

    rows = {"table3": TableRow("Block drop (BI)", "", "L"), "table2": TableRow("Block drop (BI)", "", "L")}
    TOP_ROWS = {"table3": TableRow("Top-layer drop", "120", "L"), "table2": TableRow("Sajjad et al.", "120", "L")}

    def table_row(self, table: str) -> TableRow | None:
        return (self.TOP_ROWS if self.rule == "top" else self.rows).get(table)  # top: Sajjad et al.'s dropping

    def compress_model(self, model: nn.Module, family, calib: CalibrationData | None, device: torch.device,
                       batch_size: int = 8) -> nn.Module:
        from methods.core.engine import Session

        if self.n_blocks >= len(family.blocks(model)):
            raise ValueError(f"cannot drop {self.n_blocks} of {len(family.blocks(model))} blocks; "
                             f"lower method.n_blocks")
        if self.rule == "top":
            n = len(family.blocks(model))
            self.dropped = list(range(n - self.n_blocks, n))
            delete_blocks(model, family, self.dropped)
            return model
        session = Session(model, family, device, progress=False)
        session.capture(calib, batch_size)

        def visit(i, block, inputs):
            outs = session.forward_block(block, inputs)
            n = sum(x.shape[0] for x, _ in inputs)
            self.influence.append(sum(block_influence(x, y) * x.shape[0] for (x, _), (y, _) in zip(inputs, outs)) / n)

        session.walk(visit, desc="block influence")
        self.dropped = sorted(torch.argsort(torch.tensor(self.influence))[: self.n_blocks].tolist())
        delete_blocks(model, family, self.dropped)
        return model

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        return CompressionResult(Kind.STRUCTURED, "L", before, after, facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {"block_influence": self.influence, "dropped_blocks": self.dropped}
