"""Reading record sets as the tables and `scripts/merge.py` do: every `runs/*.json` of several
results folders checked against the schema, deduplicated by id (the hash of the identity by
content), with every problem named by its path: a corrupt or off-schema file is skipped, and two
records of one identity whose results differ are a conflict: both are reported and neither is
used, never one picked silently."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from eval.provenance import REPO_ROOT
from eval.records import RecordStore

RESULT_KEYS = ("metrics", "headline", "compression")   # what two runs of one identity must agree on


@dataclass
class Collection:
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)          # (file, why)
    conflicts: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)   # id -> [(file, summary)]
    duplicates: int = 0                                                     # same id, same results
    missing: list[Path] = field(default_factory=list)                       # folders without runs/

    def report(self) -> list[str]:
        """One line per problem, each naming its file(s)."""
        lines = [f"skipped {p}: {why}" for p, why in self.skipped]
        lines += [f"missing record set {p} (no runs/ folder)" for p in self.missing]
        for rid, seen in self.conflicts.items():
            lines.append(f"conflict: record {rid} has different results in "
                         + " and ".join(f"{p} ({s})" for p, s in seen) + "; neither is used")
        return lines


def results_of(record: dict[str, Any]) -> str:
    return json.dumps({k: record.get(k) for k in RESULT_KEYS}, sort_keys=True, default=str)


def summary(record: dict[str, Any]) -> str:
    if record.get("headline") is not None:
        return f"headline {record['headline']:.6g}"
    ppl = {ds: m.get("ppl") for ds, m in record.get("metrics", {}).items() if isinstance(m, dict) and "ppl" in m}
    return "ppl " + ", ".join(f"{ds} {v:.6g}" if isinstance(v, (int, float)) else f"{ds} {v}"
                              for ds, v in ppl.items()) if ppl else "metrics differ"


def resolve_set(path: str | Path) -> Path:
    """A record set named relative to the project (the published `results/...` sets) or to the
    current directory, whichever exists; an absolute path as it is."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve() if p.exists() else p
    return (REPO_ROOT / p) if (REPO_ROOT / p).exists() else p


def set_name(folder: str | Path) -> str:
    """A record set as a reader should see it: relative to the project where it lies inside."""
    folder = Path(folder).resolve()
    return str(folder.relative_to(REPO_ROOT)) if folder.is_relative_to(REPO_ROOT) else str(folder)


def collect(roots: Iterable[str | Path], must_exist: Iterable[str | Path] = ()) -> Collection:
    """Every valid record of the folders `roots` (each a results folder holding runs/)."""
    out = Collection()
    first: dict[str, str] = {}
    required = {str(resolve_set(p)) for p in must_exist}
    seen_roots: set[Path] = set()
    for root in roots:
        root = resolve_set(root)
        if root in seen_roots:
            continue
        seen_roots.add(root)
        if not (root / "runs").is_dir():
            if str(root) in required:
                out.missing.append(root)
            continue
        for item in RecordStore(root).scan():
            if item.record is None:
                out.skipped.append((item.path, item.error or "unreadable"))
                continue
            rec, rid = item.record, item.record["id"]
            if rid in out.conflicts:
                out.conflicts[rid].append((item.path, summary(rec)))
            elif rid not in out.records:
                out.records[rid], out.paths[rid], first[rid] = rec, item.path, results_of(rec)
            elif first[rid] == results_of(rec):
                out.duplicates += 1
            else:
                out.conflicts[rid] = [(out.paths[rid], summary(out.records[rid])), (item.path, summary(rec))]
                del out.records[rid]
    return out
