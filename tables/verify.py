"""Check a claimed number: a survey row (by its spec in conf/rows/) or a free claim
("model=opt_125m method=gptq method.wbits=4 ppl=31.12"). The run that produces the figure is
reused if a record of it exists (in the results folder or a published set), else run; the
verdict compares it with the claim under the spec's tolerance:

    reproduced        |reproduced − claimed| within the tolerance for every figure
    not reproduced    outside it (the Δ is printed)
    cannot run here   the spec says why (weights not public), or the run cannot start on this
                      machine (the model is not reachable offline, no GPU, ...): the reason given
    partial           a record ran less than its protocol (a prefix of the test data, a test-sized
                      calibration): no verdict from it, unless include_partial=true, which compares
                      its figures and still says PARTIAL
    planned           a dry run: the run configs, the download size and rough GPU memory and time
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tables.build import SURVEY_TASKS
from tables.rows import RowSpec, claimed

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
METRICS = {"ppl": "wikitext2", "wikitext2": "wikitext2", "c4": "c4", "delta": "delta", "f1": "headline",
           "acc": "headline", "em": "headline"}
DEFAULT_TOLERANCE = {"wikitext2": {"rel": 0.02}, "c4": {"rel": 0.02}, "delta": {"abs": 1.0}, "headline": {"abs": 1.0}}
# rough minutes per billion parameters on one A100-class GPU: layer-wise compression, then evaluation
MINUTES_PER_B = {"compress": 1.5, "evaluate": 0.5}


@dataclass
class Verdict:
    subject: str
    status: str                                     # reproduced | not reproduced | cannot run here | partial | planned
    claimed: dict[str, float] = field(default_factory=dict)
    reproduced: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, dict[str, float]] = field(default_factory=dict)
    records: list[str] = field(default_factory=list)
    why: str = ""
    runs: list[list[str]] = field(default_factory=list)
    estimate: dict[str, Any] = field(default_factory=dict)
    protocol: str = ""

    @property
    def delta(self) -> dict[str, float]:
        return {k: self.reproduced[k] - v for k, v in self.claimed.items() if k in self.reproduced}

    def line(self) -> str:
        fig = "; ".join(f"{k}: claimed {v:g}" + (f", reproduced {self.reproduced[k]:.4g} (Δ {self.delta[k]:+.3g})"
                                                   if k in self.reproduced else "")
                        for k, v in self.claimed.items())
        tail = f" — {self.why}" if self.why else ""
        return f"{self.subject}: {self.status.upper()} [{fig}]{tail}"


def within(value: float, claim: float, tol: dict[str, float]) -> bool:
    if "rel" in tol:
        return abs(value - claim) <= tol["rel"] * abs(claim)
    return abs(value - claim) <= tol["abs"]


def compose(overrides: list[str], results: str | Path) -> dict[str, Any]:
    """The resolved run config of `overrides`, as scripts/run.py would build it."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    overrides = [f"paths.results={results}", *overrides]
    if GlobalHydra.instance().is_initialized():   # inside scripts/verify.py's Hydra app: the same conf/
        cfg = hydra_compose(config_name="config", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def _figure(record: dict, key: str) -> float | None:
    if key in ("wikitext2", "c4"):
        m = record.get("metrics", {}).get(key)
        return m["ppl"] if m else None
    return record.get(key)


class Checker:
    """Finds or makes the records behind claims: `results` (where new runs go) and published
    record sets searched first; `extra` overrides apply to every run (device=cuda, ...)."""

    def __init__(self, results: str | Path, include: list[str | Path] = (), extra: list[str] = (),
                 dry_run: bool = False, include_partial: bool = False):
        from eval.records import RecordStore
        from tables.collect import resolve_set
        self.results, self.extra, self.dry_run = Path(results), list(extra), dry_run
        self.include_partial = include_partial
        self.stores = [RecordStore(resolve_set(p)) for p in [self.results, *include]
                       if (resolve_set(p) / "runs").is_dir()]

    def record(self, overrides: list[str]) -> tuple[dict | None, str]:
        """(the record of this run, or None with the reason: the run cannot start here, or it is
        only planned (a dry run), in which case the reason is empty)."""
        from eval.pipeline import ConfigError, plan, run
        from eval.records import CorruptRecord
        cfg = compose([*overrides, *self.extra], self.results)
        try:
            rid = plan(cfg).rid
        except (ConfigError, OSError, ValueError) as err:
            return None, str(err)
        for store in self.stores:
            if store.exists(rid):
                try:
                    return store.load(rid), ""
                except CorruptRecord as err:
                    print(f"warning: skipped {err}", file=sys.stderr)
        if self.dry_run:
            return None, ""
        return run(cfg), ""

    def check(self, subject: str, runs: list[tuple[str, list[str]]], claims: dict[str, float],
              tolerance: dict[str, dict[str, float]]) -> Verdict:
        """`runs`: (figure key or task, overrides) per run; `claims`: figure -> claimed value."""
        v = Verdict(subject, "planned", dict(claims), tolerance=tolerance, runs=[o for _, o in runs])
        partial: list[str] = []
        for key, overrides in runs:
            rec, why = self.record(overrides)
            if rec is None:
                if why:
                    v.status, v.why = "cannot run here", why
                    return v
                continue
            v.records.append(rec["id"])
            if "protocol" not in rec:
                v.status, v.why = "cannot run here", (f"record {rec['id']} does not say which protocol it ran: "
                                                      f"upgrade it (scripts/merge.py upgrade=true) or rerun it")
                return v
            if not rec["protocol"]["complete"]:
                partial += rec["protocol"]["partial"]
                if not self.include_partial:
                    v.status = "partial"
                    v.why = (f"record {rec['id']} ran less than its protocol ({'; '.join(partial)}): no verdict; "
                             f"include_partial=true compares it anyway")
                    return v
            for figure in [k for k in claims if k == key or key in ("lm", "any")]:
                value = _figure(rec, "delta" if figure in dict(SURVEY_TASKS) else figure)
                if value is not None:
                    v.reproduced[figure] = float(value)
        if v.status == "planned" and len(v.records) == len(runs):
            missing = [k for k in claims if k not in v.reproduced]
            if missing:
                v.status, v.why = "cannot run here", f"the records hold no figure for {', '.join(missing)}"
            else:
                ok = all(within(v.reproduced[k], c, tolerance[k]) for k, c in claims.items())
                v.status = "reproduced" if ok else "not reproduced"
                if partial:
                    v.status, v.why = "partial", (f"{'within' if ok else 'outside'} the tolerance, on a partial "
                                                  f"protocol ({'; '.join(dict.fromkeys(partial))})")
        return v

    def check_row(self, spec: RowSpec) -> Verdict:
        claims = claimed(spec)
        tol = {k: spec.tolerance for k in claims}
        runs = [(("lm" if t == "lm" else t), spec.run_overrides(t)) for t in spec.tasks]
        subject = f"{spec.table} {spec.id}"
        if spec.status != "runnable":
            return Verdict(subject, "cannot run here", claims, tolerance=tol, why=spec.why,
                           runs=[o for _, o in runs], estimate=estimate(spec), protocol=spec.protocol)
        v = self.check(subject, runs, claims, tol)
        v.estimate, v.protocol = estimate(spec), spec.protocol
        return v

    def check_claim(self, claim: str, tolerance: dict[str, float] | None = None) -> Verdict:
        """`claim`: run overrides and figures, e.g. "model=opt_125m method=gptq method.wbits=4 ppl=31.12"."""
        overrides, claims = [], {}
        for token in claim.split():
            key, _, value = token.partition("=")
            if key in METRICS:
                claims[METRICS[key]] = float(value)
            else:
                overrides.append(token)
        if not claims:
            raise ValueError(f"claim '{claim}' names no figure: add one of {', '.join(sorted(METRICS))}=<value>")
        tol = {k: tolerance or DEFAULT_TOLERANCE[k] for k in claims}
        return self.check(claim, [("any", overrides)], claims, tol)


def estimate(spec: RowSpec) -> dict[str, Any]:
    """Download size and rough GPU memory and time of a row's runs, from its model's `needs`."""
    from omegaconf import OmegaConf
    needs = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{spec.model}.yaml")).get("needs") or {}
    out = {k: needs[k] for k in ("download_gb", "gpu_memory_gb", "offload", "cpu_memory_gb") if k in needs}
    if "download_gb" in needs:
        billions = needs["download_gb"] / 2   # fp16 weights
        per_run = billions * (MINUTES_PER_B["compress"] + MINUTES_PER_B["evaluate"])
        out["gpu_minutes_rough"] = round(per_run * len(spec.tasks), 1)
    return out
