"""Measure a record set's speedups again, on the configs of its records: each compressed record
is rerun with the kernel stage on (kernels.convert=true) and today's timing (interleaved passes,
the spread kept). The rerun must give the record's metrics digit for digit; then it replaces the
record (its id changes, as the kernel stage is part of a run's identity), else both stay and the
difference is reported. `replace_differing` replaces such a record too (a record made by older
code, whose figures today's code no longer gives to the last digit): the new record then names
the one it supersedes and the largest relative difference of their figures (`supersedes`)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _numbers(metrics: Any) -> Any:
    """The metrics without the evaluation set sizes (`of`), which older records did not keep."""
    if isinstance(metrics, dict):
        return {k: _numbers(v) for k, v in metrics.items() if k != "of"}
    return metrics


@dataclass
class Remeasured:
    replaced: dict[str, str] = field(default_factory=dict)         # old id -> new id
    differ: dict[str, str] = field(default_factory=dict)           # old id -> what differs
    cells: dict[str, str] = field(default_factory=dict)            # new id -> the speedup now measured


def _numbers_flat(m: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(m, dict):
        return {k2: v2 for k, v in m.items() for k2, v2 in _numbers_flat(v, f"{prefix}{k}.").items()}
    return {prefix[:-1]: float(m)} if isinstance(m, (int, float)) and not isinstance(m, bool) else {}


def largest_difference(a: dict, b: dict) -> float:
    """The largest relative difference between two records' numeric metrics."""
    fa, fb = _numbers_flat(_numbers(a)), _numbers_flat(_numbers(b))
    return max((abs(fa[k] - fb[k]) / max(abs(fb[k]), 1e-30) for k in fa.keys() & fb.keys()), default=0.0)


def remeasure(folder: str | Path, presets: list[str] | None = None, timing: dict | None = None,
              records: list[str] | None = None, replace_differing: bool = False) -> Remeasured:
    from eval.pipeline import run
    from eval.records import RecordStore
    store = RecordStore(folder)
    out = Remeasured()
    for path in sorted(store.dir.glob("[!.]*.json")):
        rid = path.stem
        rec = store.load(rid)
        if rec["kind"] != "compressed" or (presets and rec["preset"] not in presets) or (records and rid not in records):
            continue
        if rec["identity"].get("kernels", {}).get("convert"):
            continue   # its kernel stage ran already
        cfg = copy.deepcopy(rec["config"])
        cfg["method"]["preset"] = rec["preset"]      # the preset the record came from (not in older configs)
        cfg["kernels"] = {**(cfg.get("kernels") or {}), "convert": True}
        cfg["timing"] = dict(timing or {"inputs": None, "repeats": 5})
        cfg["paths"] = {**cfg["paths"], "results": str(folder)}
        cfg.update(force=False, progress=False)
        new = run(cfg)
        if _numbers(new["metrics"]) != _numbers(rec["metrics"]):
            diff = largest_difference(new["metrics"], rec["metrics"])
            out.differ[rid] = f"metrics differ from {new['id']}'s by up to {diff:.2e} (relative)"
            if not replace_differing:
                continue
            new = {**new, "preset": rec["preset"], "supersedes": {"id": rid, "created": rec["created"], "git_commit": rec.get("git_commit"),
                                         "largest_relative_difference": diff, "metrics": rec["metrics"]}}
            store.write(new)
        if new["id"] != rid:
            (store.dir / f"{rid}.json").unlink()
        out.replaced[rid] = new["id"]
        k = new.get("kernels") or {}
        s = new.get("speedup") or k.get("speedup")
        out.cells[new["id"]] = (f"{s['median']:.3f} [{s['q1']:.3f}, {s['q3']:.3f}]" if s else
                                f"no cell: {k.get('reason') or k.get('error') or 'not timed'}")
    return out
