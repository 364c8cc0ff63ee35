"""Merging the results folders of several machines into one, and upgrading records of an older
schema. Records are deduplicated by identity; conflicts (one identity, different results) and
unreadable files are reported with their paths and not copied (tables/collect.py)."""
from __future__ import annotations

import copy
import json
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


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """A record of schema 1 (identity by config spelling) in this schema: its identity rebuilt from
    its config by today's planner, with the numerics of the machine that made it. The results are
    untouched; `upgraded_from` keeps the old id."""
    from eval.pipeline import plan
    cfg = copy.deepcopy(record["config"])
    planned = plan({**cfg, "device": "cpu", "threads": None})
    num = numerics_of(record)
    dense_identity = {**planned.dense_identity, "numerics": num}
    if record.get("kind") == "dense":
        identity = dense_identity
    else:
        identity = {**planned.identity, "numerics": num}
    new = {**record, "schema": SCHEMA, "identity": identity, "id": record_id(identity),
           "upgraded_from": {"schema": record.get("schema", 1), "id": record["id"]}}
    if record.get("kind") == "compressed":
        new["dense_id"] = record_id(dense_identity)
    return new


@dataclass
class MergeReport:
    written: list[str] = field(default_factory=list)
    upgraded: dict[str, str] = field(default_factory=dict)     # old id -> new id
    failed_upgrades: list[tuple[Path, str]] = field(default_factory=list)
    collection: Collection = field(default_factory=Collection)

    def lines(self) -> list[str]:
        out = self.collection.report()
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
    for rid, rec in found.records.items():
        if not store.exists(rid):
            store.write(rec)
            report.written.append(rid)
    return report
