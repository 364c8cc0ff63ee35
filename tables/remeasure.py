"""Measure a record set's speedups again, on the configs of its records: each compressed record
is rerun with the kernel stage on (kernels.convert=true) and today's timing (interleaved passes,
the spread kept). The rerun must give the record's metrics digit for digit; then it replaces the
record (its id changes, as the kernel stage is part of a run's identity), else both stay and the
difference is reported. `replace_differing` replaces such a record too (a record made by older
code, whose figures today's code no longer gives to the last digit): the new record then names
the one it supersedes and the largest relative difference of their figures (`supersedes`).

`reseed` reruns records the same way with only their `seed` changed, so that a claim can be judged
on several draws of the calibration sample: the new records differ from the old ones in the seed
alone and land beside them."""
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


def target(set_: str | None, records: list[Any]) -> tuple[Path, list[str]]:
    """The record set's folder and the full ids that `records` names (leading hex digits allowed);
    ValueError, one line saying what to give, before any run."""
    from eval.records import RecordStore
    from tables.collect import resolve_set
    if not set_:
        raise ValueError("give set=<a results folder holding runs/>, e.g. set=results/tiny-llama-wt2")
    folder = resolve_set(set_)
    if not (folder / "runs").is_dir():
        raise ValueError(f"{folder} holds no runs/ folder")
    for r in records:
        if isinstance(r, float):   # Hydra reads 14e17572 as 1.4e17579 = inf: the id is lost
            raise ValueError(f"a record id read as the number {r}: quote ids that look like numbers, "
                             f"e.g. \"records=['14e17572']\"")
    return folder, RecordStore(folder).resolve([str(r) for r in records])


def _selected(folder: str | Path, presets: list[str] | None, records: list[str] | None) -> list[dict]:
    """The compressed records of `folder`, of these presets and ids where given."""
    from eval.records import RecordStore
    store = RecordStore(folder)
    out = []
    for path in sorted(store.dir.glob("[!.]*.json")):
        rec = store.load(path.stem)
        if rec["kind"] == "compressed" and (not presets or rec["preset"] in presets) and (not records or rec["id"] in records):
            out.append(rec)
    return out


def _rerun(rec: dict, folder: str | Path, **changes: Any) -> dict:
    """Run the record's own config again, into `folder`, with `changes` (top-level keys) applied."""
    from eval.pipeline import run
    cfg = copy.deepcopy(rec["config"])
    cfg["method"]["preset"] = rec["preset"]      # the preset the record came from (not in older configs)
    cfg.update(changes)
    cfg["paths"] = {**cfg["paths"], "results": str(folder)}
    cfg.update(force=False, progress=False)
    return run(cfg)


def reseed(folder: str | Path, seeds: list[int], presets: list[str] | None = None,
           records: list[str] | None = None) -> dict[str, dict[int, str]]:
    """Rerun each selected run configuration (its records of any seed are one) at each of `seeds`;
    {old id: {seed: new id}}. A rerun whose record exists already is skipped by the runner."""
    from tables.claims import config_key
    out: dict[str, dict[int, str]] = {}
    done: set[str] = set()
    for rec in _selected(folder, presets, records):
        if config_key(rec) in done:
            continue
        done.add(config_key(rec))
        for seed in seeds:
            if seed != rec.get("seed", 0):
                out.setdefault(rec["id"], {})[seed] = _rerun(rec, folder, seed=seed)["id"]
    return out


def remeasure(folder: str | Path, presets: list[str] | None = None, timing: dict | None = None,
              records: list[str] | None = None, replace_differing: bool = False) -> Remeasured:
    from eval.records import RecordStore
    store = RecordStore(folder)
    out = Remeasured()
    for rec in _selected(folder, presets, records):
        rid = rec["id"]
        if rec["identity"].get("kernels", {}).get("convert"):
            continue   # its kernel stage ran already
        new = _rerun(rec, folder, kernels={**(rec["config"].get("kernels") or {}), "convert": True},
                     timing=dict(timing or {"inputs": None, "repeats": 5}))
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
