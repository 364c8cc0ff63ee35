"""Several methods applied in order, block by block (e.g. SparseGPT 50% then GPTQ 4-bit, as
in the SparseGPT paper's joint results): each step gathers fresh statistics on the block as
the previous steps left it; weights pruned by an earlier step stay zero under GPTQ-style
quantization."""
from __future__ import annotations

from typing import Any

from methods.base import Method, build, register


@register("compose")
class Compose(Method):
    def __init__(self, steps: list[dict[str, Any]]):
        super().__init__(steps=steps)
        if not steps:
            raise ValueError("compose needs a non-empty `steps` list of method configs")
        self.steps = []
        for step in steps:
            step = dict(step)
            self.steps.append(build(step.pop("name"), **step))
        self.plans = any(s.plans for s in self.steps)
        self.propagate_compressed = all(s.propagate_compressed for s in self.steps)

    @property
    def stats(self):  # type: ignore[override]
        return frozenset().union(*(s.stats for s in self.steps))

    def check_model(self, linears, family=None) -> None:
        for s in self.steps:
            s.check_model(linears, family)

    def plan(self, session) -> None:
        for s in self.steps:
            s.plan(session)

    def compress_block(self, session, index, block, inputs) -> None:
        for s in self.steps:
            s.compress_block(session, index, block, inputs)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": [s.name for s in self.steps]}
        for s in self.steps:
            out.update(s.summary())
        return out
