"""The row registry: every reported row of Tables 2–7 as a runnable spec (conf/rows/<table>.yaml).

A spec names the model config and method preset with the row's setting (`overrides`), the
tasks and protocol it is scored on, how its rate is counted (`rate`, which recomputes the
survey's figure), the tolerance within which a reproduction counts (tables/verify.py), and whether it can run at
all (`status`: runnable, or why not). The claimed figures themselves stay in tables/reported/:
a spec is joined to its row by `id` = "<method>@<plm>@<rate>" (with "#2" on a repeated row)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from tables.build import SURVEY_TASKS, TABLES, reported, reported_ids

ROWS_DIR = Path(__file__).resolve().parent.parent / "conf" / "rows"
STATUSES = ("runnable", "local_weights", "not_implemented")


@dataclass(frozen=True)
class RowSpec:
    table: str
    id: str
    model: str                        # conf/model/<model>.yaml
    preset: str                       # conf/method/<preset>.yaml
    tasks: tuple[str, ...]            # lm (WikiText-2 perplexity) or mnli / qqp / squad
    rate: dict[str, Any]              # how the survey's rate is counted (see `rate_value`)
    tolerance: dict[str, Any]         # {"effect": f, "floor": {...}} (perplexity) or {"abs": a, "floor": {...}} (%p)
    protocol: str                     # what the figure is measured on
    delta: str                        # how Δ is computed
    overrides: dict[str, Any] = field(default_factory=dict)
    status: str = "runnable"
    why: str = ""
    note: str = ""

    def rate_value(self) -> float | None:
        """The rate the spec's counting gives: 1 − bits/base; a sparsity; layers removed over
        layers; or a measured fraction (FLOPs, parameters) the spec states with its basis."""
        r = self.rate
        if "bits" in r:
            return 1 - r["bits"] / r["base"]
        if "sparsity" in r:
            return float(r["sparsity"])
        if "layers_removed" in r:
            return r["layers_removed"] / r["layers"]
        if "fraction" in r:
            return float(r["fraction"])
        return None   # a speedup target (ZipLM, PoWER-BERT): the survey gives no rate

    def run_overrides(self, task: str) -> list[str]:
        """Hydra overrides of one run of this row on `task`."""
        out = [f"model={self.model}", f"method={self.preset}"]
        if "task" not in self.overrides:   # a trained decoder row names its training task (lm_finetune)
            out += [f"task={task}"]
        out += [f"{k}={_hydra_value(v)}" for k, v in self.overrides.items()]
        return out


def _hydra_value(v: Any) -> str:
    if isinstance(v, str) and (":" in v or "," in v):
        return f"'{v}'"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(str(x) for x in v) + "]"
    return str(v).lower() if isinstance(v, bool) else str(v)


def reported_rows(table: str) -> pd.DataFrame:
    """The table's reported rows with their ids."""
    df = reported(TABLES[table]).copy()
    plm = df["plm"] if "plm" in df.columns else pd.Series("bert-base", index=df.index)
    return df.assign(id=reported_ids(df), plm=plm)


def load(table: str | None = None) -> list[RowSpec]:
    """Every spec (of one table, or of all)."""
    out = []
    for key in [table] if table else list(TABLES):
        path = ROWS_DIR / f"{key}.yaml"
        doc = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        defaults = doc.get("defaults", {})
        for entry in doc["rows"]:
            spec = {**defaults, **entry}
            spec["tasks"] = tuple(spec["tasks"])
            spec["overrides"] = {**defaults.get("overrides", {}), **entry.get("overrides", {})}
            if spec.get("status", "runnable") not in STATUSES:
                raise ValueError(f"{path}: row {spec['id']}: status must be one of {STATUSES}")
            out.append(RowSpec(table=key, **spec))
    return out


def find(table: str, query: str) -> list[RowSpec]:
    """Specs whose id is `query`, or starts with it ("OPTQ", "OPTQ@opt-175b"), case-insensitive."""
    specs = load(table)
    q = query.lower()
    exact = [s for s in specs if s.id.lower() == q]
    return exact or [s for s in specs if s.id.lower().startswith(q + "@") or s.id.lower().startswith(q)]


def claimed(spec: RowSpec) -> dict[str, float]:
    """The survey's figures for the spec's row: {"wikitext2": ppl} or {task: Δ %p}."""
    df = reported_rows(spec.table)
    row = df[df["id"] == spec.id]
    if row.empty:
        raise ValueError(f"{spec.table}: no reported row {spec.id}")
    r = row.iloc[0]
    if "lm" in spec.tasks:
        return {"wikitext2": float(r["ppl_compressed"])}
    return {t: float(r[t]) for t, _ in SURVEY_TASKS if t in r and not pd.isna(r[t])}
