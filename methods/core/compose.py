"""Several layer-wise methods applied in order, block by block (e.g. SparseGPT 50% then GPTQ
4-bit, as in the SparseGPT paper's joint results): each step gathers fresh statistics on the
block as the previous steps left it; weights pruned by an earlier step stay zero under
GPTQ-style quantization. The result is the last step's (a pruned-then-quantized model is a
quantized model whose rate counts stored bits), with every step's facts."""
from __future__ import annotations

from typing import Any

from methods.core.base import CompressionResult, LayerwiseMethod, TableRow, TrainedMethod, build_at, register
from methods.core.model_facts import ModelSize


@register("compose")
class Compose(LayerwiseMethod):
    def __init__(self, steps: list[dict[str, Any]]):
        if not steps:
            raise ValueError("compose needs a non-empty `steps` list of method configs")
        self.steps: list[LayerwiseMethod] = []
        for i, step in enumerate(steps):
            step = dict(step)
            method = build_at(f"method.steps.{i}", step.pop("name"), step)
            if not isinstance(method, LayerwiseMethod):
                kind = "a trained" if isinstance(method, TrainedMethod) else "a whole-model"
                raise ValueError(f"compose chains layer-wise methods block by block; step '{method.name}' is "
                                 f"{kind} method. Run it on its own, or as the first stage with save_dir= and "
                                 f"model.path= for the next")
            self.steps.append(method)
        self.plans = any(s.plans for s in self.steps)
        self.propagate_compressed = all(s.propagate_compressed for s in self.steps)
        common = set.intersection(*(set(s.accepts) for s in self.steps))
        if not common:
            raise ValueError(f"compose: steps {[s.name for s in self.steps]} share no calibration data type")
        self.accepts = tuple(t for t in self.steps[0].accepts if t in common)

    @property
    def stats(self):  # type: ignore[override]
        return frozenset().union(*(s.stats for s in self.steps))

    def check_model(self, linears, family=None) -> None:
        for s in self.steps:
            s.check_model(linears, family)

    def keep_codes(self, keep: bool) -> None:
        for s in self.steps:
            s.keep_codes(keep)

    def plan(self, session) -> None:
        for s in self.steps:
            s.plan(session)

    def compress_block(self, session, block_index, block, inputs) -> None:
        for s in self.steps:
            s.compress_block(session, block_index, block, inputs)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "settings": {"steps": [s.identity() for s in self.steps]}}

    def table_rows(self) -> dict[str, TableRow]:
        return {t: row for t in self.steps[-1].table_rows() if (row := self.table_row(t)) is not None}

    def table_row(self, table: str) -> TableRow | None:
        last = self.steps[-1].table_row(table)
        if last is None:
            return None
        labels = [(s.table_row(table) or TableRow(s.label)).label for s in self.steps]
        return TableRow("+".join(labels), last.ref, last.granularity, last.uniform, last.cost)

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        res = self.steps[-1].result(before, after)
        res.facts = {**self.summary(), **res.facts}
        return res

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": [s.name for s in self.steps]}
        for s in self.steps:
            out.update(s.summary())
        return out

