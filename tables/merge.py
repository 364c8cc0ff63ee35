"""Merging the results folders of several machines into one, and upgrading records of an older
schema. Records are deduplicated by identity; conflicts (one identity, different results) and
unreadable files are reported with their paths and not copied (tables/collect.py)."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from eval.records import SCHEMA, RecordStore, record_id
from tables.collect import Collection, collect, resolve_set


def numerics_of(record: dict[str, Any]) -> dict[str, Any]:
    """The numerics identity of the machine a record was made on, from its hardware section."""
    hw = record.get("hardware") or {}
    if str(hw.get("device", "cpu")).startswith("cuda"):
        return {"device": "cuda", "gpu": hw.get("gpu") or hw.get("name")}
    return {"device": str(hw.get("device", "cpu")).split(":")[0], "threads": hw.get("torch_threads")}


# what ran before schema 3: each speedup took the median of 3 passes over the task's own inputs
LEGACY_TIMING = {"inputs": None, "repeats": 3}


def _preset_of(record: dict[str, Any], cfg: dict[str, Any], method_identity: dict[str, Any]) -> str:
    """The preset a record came from: the config's own `preset`, else the conf/method preset of its
    method whose settings differ least from the record's (a sweep overrides a preset's rate or
    bits); a tie goes to the preset that the row registry (conf/rows) runs in the tables of the
    record's role. What stays ambiguous is refused, never guessed."""
    from omegaconf import OmegaConf

    from methods.core.base import build
    from tables.build import TABLES
    from tables.rows import load
    if cfg["method"].get("preset"):
        return cfg["method"]["preset"]
    mine = method_identity["settings"]
    scored = []
    for path in sorted((Path(__file__).resolve().parent.parent / "conf" / "method").glob("*.yaml")):
        knobs = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        name = knobs.pop("name")
        if name != method_identity["name"]:
            continue
        theirs = build(name, **knobs).identity()["settings"]
        scored.append((sum(mine.get(k) != theirs.get(k) for k in set(mine) | set(theirs)), path.stem))
    best = [p for d, p in scored if d == min(d for d, _ in scored)] if scored else []
    if len(best) > 1:
        used = {spec.preset for spec in load() if TABLES[spec.table].role == record.get("role")}
        best = [p for p in best if p in used] or best
    if len(best) != 1:
        raise ValueError(f"cannot tell which preset of method '{method_identity['name']}' it came from "
                         f"({', '.join(best) or 'none'}): rerun it")
    return best[0]


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """A record of an older schema in this one: its identity rebuilt from its config by today's
    planner (the method by its bound settings and version), with the numerics of the machine
    that made it and the timing that ran then; its preset, table rows and protocol written in.
    The results are untouched; `upgraded_from` keeps the old id and schema. A speedup of then
    kept no spread: it is kept as it was and shows in no table."""
    from eval.pipeline import plan
    from eval.tasks.base import Evaluation
    cfg = copy.deepcopy(record["config"])
    cfg.setdefault("timing", dict(LEGACY_TIMING))
    planned = plan({**cfg, "device": "cpu", "threads": None})
    num = numerics_of(record)
    dense_identity = {**planned.dense_identity, "numerics": num}
    ev = Evaluation(record["metrics"], record.get("headline"))
    if record.get("kind") == "dense":
        identity, preset, rows = dense_identity, "dense", {}
        protocol = planned.task.protocol(ev)
    else:
        identity = {**planned.identity, "numerics": num}
        method = planned.method
        preset = _preset_of(record, cfg, identity["method"])
        cfg["method"] = {**cfg["method"], "preset": preset}   # as today's conf/method files spell it
        rows = {t: dataclasses.asdict(row) for t, row in method.table_rows().items()}
        protocol = planned.task.protocol(ev, method, "training" in record)
    new = {**record, "schema": SCHEMA, "identity": identity, "id": record_id(identity), "config": cfg,
           "preset": preset, "rows": rows, "protocol": protocol,
           "upgraded_from": {"schema": record.get("schema", 1), "id": record["id"],
                             **({"before": record["upgraded_from"]} if "upgraded_from" in record else {})}}
    if record.get("kind") == "compressed":
        new["dense_id"] = record_id(dense_identity)
    return new


@dataclass
class MergeReport:
    written: list[str] = field(default_factory=list)
    upgraded: dict[str, str] = field(default_factory=dict)     # old id -> new id
    failed_upgrades: list[tuple[Path, str]] = field(default_factory=list)
    collection: Collection = field(default_factory=Collection)
    moved_aside: list[tuple[Path, Path]] = field(default_factory=list)   # the output's side of a conflict
    no_baseline: list[str] = field(default_factory=list)                 # compressed records without one

    def lines(self) -> list[str]:
        out = self.collection.report()
        out += [f"moved {a} aside to {b.name}: the output folder's side of the conflict is not used either"
                for a, b in self.moved_aside]
        out += self.no_baseline
        out += [f"could not upgrade {p}: {why}" for p, why in self.failed_upgrades]
        return out


def upgrade_folder(src: Path, dst: Path) -> tuple[dict[str, str], list[tuple[Path, str]]]:
    """Upgrade every schema-1 record of `src`/runs into `dst`/runs (schema-2 ones are copied as they are)."""
    store = RecordStore(dst)
    mapping: dict[str, str] = {}
    failed: list[tuple[Path, str]] = []
    for f in sorted((src / "runs").glob("*.json")):
        if f.name.startswith("."):
            continue
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError) as err:
            failed.append((f, f"unreadable: {err}"))
            continue
        if not isinstance(rec, dict) or "id" not in rec or "config" not in rec:
            failed.append((f, "not a record"))
            continue
        if rec.get("schema") == SCHEMA:
            store.write(rec)
            continue
        try:
            new = upgrade(rec)
        except Exception as err:  # noqa: BLE001 - reported per file, the others go on
            failed.append((f, f"{type(err).__name__}: {err}"))
            continue
        store.write(new)
        mapping[rec["id"]] = new["id"]
        if f.resolve().parent == store.dir.resolve() and new["id"] != rec["id"]:
            f.unlink()
    return mapping, failed


def merge(inputs: Iterable[str | Path], out: str | Path) -> MergeReport:
    """Copy every valid record of `inputs` into `out`/runs, each identity once. A conflict is
    reported and neither of its records is written; a record already in `out` counts as an input."""
    out = Path(out)
    roots = [out, *(resolve_set(p) for p in inputs)]
    found = collect(roots, must_exist=list(inputs))
    report = MergeReport(collection=found)
    store = RecordStore(out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for rid, seen in found.conflicts.items():   # "neither is used" holds for the output folder too
        mine = store.path(rid)
        if mine.is_file() and any(p.resolve() == mine.resolve() for p, _ in seen):
            aside = mine.with_name(f"{mine.name}.conflict-{stamp}")
            os.replace(mine, aside)
            report.moved_aside.append((mine, aside))
    corrupt = {p.stem: why for p, why in found.skipped}
    for rid, rec in found.records.items():
        if not store.exists(rid):
            store.write(rec)
            report.written.append(rid)
        dense = rec.get("dense_id")
        if rec["kind"] == "compressed" and dense not in found.records:
            why = (f"is corrupt ({corrupt[dense]})" if dense in corrupt else
                   "is in conflict" if dense in found.conflicts else "is in none of the folders")
            report.no_baseline.append(f"record {rid} merged, but its dense record {dense} {why}: "
                                      f"its delta has no baseline in {out}")
    return report
