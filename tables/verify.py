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
    planned           a dry run: a plan, per row the run configs, GPU memory, the download and GPU-hours
                      (tables/estimate.py), nothing composed through Hydra or planned by the pipeline

The tolerance is the spec's (conf/rows/*.yaml; a claim's: conf/verify.yaml claim_tolerance), in
units that fit the effect: a perplexity within `effect` × |compressed − dense| (the record's own
compression effect, its dense record being `dense_id`), a Δ in %p within `abs`; neither below a
floor of seed noise, measured as the widest spread of one run config over seeds on the same model
where records of several seeds exist, else the floor the spec declares (and says so).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tables.build import SURVEY_TASKS
from tables.estimate import CONF_DIR, Estimate, estimate_row, verify_conf
from tables.rows import RowSpec, claimed

METRICS = {"ppl": "wikitext2", "wikitext2": "wikitext2", "c4": "c4", "delta": "delta", "f1": "headline",
           "acc": "headline", "em": "headline"}
# the exit status of each verdict; several verdicts exit with the first of these that any has
EXIT = {"reproduced": 0, "not reproduced": 1, "cannot run here": 2, "partial": 3, "planned": 0}
WORST_FIRST = ("not reproduced", "cannot run here", "partial")


def exit_status(verdicts: Iterable["Verdict"], dry_run: bool = False) -> int:
    """0 reproduced, 1 not reproduced, 2 cannot run here, 3 partial; of several verdicts: 1 if any
    is not reproduced, else 2 if any cannot run, else 3 if any is partial, else 0. A dry run: 0."""
    if dry_run:
        return 0
    statuses = {v.status for v in verdicts}
    return next((EXIT[s] for s in WORST_FIRST if s in statuses), 0)


@dataclass
class Band:
    """A figure's tolerance resolved against its record: |reproduced − claimed| ≤ width."""

    width: float
    rule: str        # how the width was reached, every term at full precision


def band(tol: dict[str, Any], value: float, claim: float, dense: float | None,
         measured_floor: tuple[float, str] | None) -> Band:
    """The width of `tol` (a spec's or a claim's tolerance) for a reproduced `value` whose dense
    record gives `dense`: `effect` × |value − dense| or `abs`, never below the floor where `tol`
    declares one (measured where `measured_floor` is given, else `tol["floor"]`: {rel: of the
    value} or {abs: ...}).
    A bare {rel: r} (given on the command line) is r × |claimed|, no floor."""
    if "rel" in tol and "effect" not in tol and "abs" not in tol:
        return Band(tol["rel"] * abs(claim), f"{tol['rel']!r} × |claimed {claim!r}|")
    if "floor" not in tol:      # a tolerance given without one (tolerance={abs: 0.01}) is taken as it is
        floor, floor_rule = 0.0, "no floor"
    elif measured_floor is not None:
        floor, floor_rule = measured_floor[0], f"floor {measured_floor[0]!r} ({measured_floor[1]})"
    else:
        f = tol["floor"]
        floor = f["rel"] * abs(value) if "rel" in f else float(f["abs"])
        how = f"{f['rel']!r} × |{value!r}|" if "rel" in f else "a fixed width"
        floor_rule = f"floor {floor!r} (declared, not measured: {how}; no records of several seeds on this model)"
    if "effect" in tol:
        if dense is None:
            return Band(floor, f"{floor_rule}; no dense record, so no effect to scale")
        effect = abs(value - dense)
        main, main_rule = tol["effect"] * effect, f"{tol['effect']!r} × |effect {value!r} − {dense!r}|"
    else:
        main, main_rule = float(tol["abs"]), f"{tol['abs']!r} %p"
    return Band(max(main, floor), f"max({main_rule} = {main!r}, {floor_rule})")


@dataclass
class Verdict:
    subject: str
    status: str                                     # reproduced | not reproduced | cannot run here | partial | planned
    claimed: dict[str, float] = field(default_factory=dict)
    reproduced: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: list[str] = field(default_factory=list)
    why: str = ""
    runs: list[list[str]] = field(default_factory=list)
    estimate: Estimate | None = None
    protocol: str = ""
    bands: dict[str, Band] = field(default_factory=dict)

    @property
    def delta(self) -> dict[str, float]:
        return {k: self.reproduced[k] - v for k, v in self.claimed.items() if k in self.reproduced}

    def line(self) -> str:
        """The verdict, every figure at full precision (repr), with its tolerance and how it was reached."""
        figs = []
        for k, v in self.claimed.items():
            fig = f"{k}: claimed {v!r}"
            if k in self.reproduced:
                fig += f", reproduced {self.reproduced[k]!r} (Δ {self.delta[k]!r})"
            if k in self.bands:
                fig += f", tolerance ±{self.bands[k].width!r} = {self.bands[k].rule}"
            figs.append(fig)
        tail = f" — {self.why}" if self.why else ""
        return f"{self.subject}: {self.status.upper()} [{'; '.join(figs)}]{tail}"


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


def _unseeded(record: dict) -> str:
    """A run config: the record's identity without its seed."""
    return json.dumps({k: v for k, v in record["identity"].items() if k != "seed"}, sort_keys=True, default=str)


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
        self._all: list[dict] | None = None

    def record(self, overrides: list[str]) -> tuple[dict | None, str]:
        """(the record of this run, or None with the reason: the run cannot start here, or it is
        only planned (a dry run), in which case the reason is empty)."""
        from eval.pipeline import ConfigError, plan, run
        cfg = compose([*overrides, *self.extra], self.results)
        try:
            rid = plan(cfg).rid
        except (ConfigError, OSError, ValueError) as err:
            return None, str(err)
        found = self.find(rid)
        if found is not None or self.dry_run:
            return found, ""
        return run(cfg), ""

    def find(self, rid: str) -> dict | None:
        """The record `rid` from the first store holding a readable copy."""
        from eval.records import CorruptRecord
        for store in self.stores:
            if store.exists(rid):
                try:
                    return store.load(rid)
                except CorruptRecord as err:
                    print(f"warning: skipped {err}", file=sys.stderr)
        return None

    def all_records(self) -> list[dict]:
        """Every valid record of every store (read once)."""
        if self._all is None:
            self._all = [r for store in self.stores for r in store]
        return self._all

    def seed_floor(self, record: dict, key: str) -> tuple[float, str] | None:
        """The spread of figure `key` over seeds: of `record`'s own run config (identity equal but for
        the seed) where the records hold two seeds of it or more, else the widest among the run
        configs on its model and task that have them."""
        model, task = json.dumps(record["identity"].get("model"), sort_keys=True), record.get("task")
        by_config: dict[str, dict[Any, float]] = {}
        for rec in self.all_records():
            if rec.get("task") != task or json.dumps(rec["identity"].get("model"), sort_keys=True) != model:
                continue
            value = _figure(rec, key)
            if value is not None:
                by_config.setdefault(_unseeded(rec), {})[rec["identity"].get("seed")] = float(value)
        own = by_config.get(_unseeded(record), {})
        if len(own) >= 2:
            return max(own.values()) - min(own.values()), f"measured: this run's spread over {len(own)} seeds"
        spreads = [max(s.values()) - min(s.values()) for s in by_config.values() if len(s) >= 2]
        if not spreads:
            return None
        return max(spreads), f"measured: the widest spread over seeds of {len(spreads)} run config(s) on this model"

    def band(self, tol: dict[str, Any], record: dict, key: str, claim: float) -> Band:
        value = float(_figure(record, key))
        dense = None
        if "effect" in tol:
            dense_rec = record if record.get("kind") == "dense" else (
                self.find(record["dense_id"]) if record.get("dense_id") else None)
            dense_value = _figure(dense_rec, key) if dense_rec is not None else None
            dense = float(dense_value) if dense_value is not None else None
        return band(tol, value, claim, dense, self.seed_floor(record, key))

    def check(self, subject: str, runs: list[tuple[str, list[str]]], claims: dict[str, float],
              tolerance: dict[str, dict[str, Any]]) -> Verdict:
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
                source = "delta" if figure in dict(SURVEY_TASKS) else figure
                value = _figure(rec, source)
                if value is not None:
                    v.reproduced[figure] = float(value)
                    v.bands[figure] = self.band(tolerance[figure], rec, source, claims[figure])
        if v.status == "planned" and len(v.records) == len(runs):
            missing = [k for k in claims if k not in v.reproduced]
            if missing:
                v.status, v.why = "cannot run here", f"the records hold no figure for {', '.join(missing)}"
            else:
                ok = all(abs(v.reproduced[k] - c) <= v.bands[k].width for k, c in claims.items())
                v.status = "reproduced" if ok else "not reproduced"
                if partial:
                    v.status, v.why = "partial", (f"{'within' if ok else 'outside'} the tolerance, on a partial "
                                                  f"protocol ({'; '.join(dict.fromkeys(partial))})")
        return v

    def check_row(self, spec: RowSpec) -> Verdict:
        """A row's verdict; in a dry run its plan: the runs and their estimate, nothing composed
        through Hydra or planned by the pipeline (which reaches for each model's config)."""
        claims = claimed(spec)
        tol = {k: spec.tolerance for k in claims}
        runs = [(("lm" if t == "lm" else t), spec.run_overrides(t)) for t in spec.tasks]
        subject = f"{spec.table} {spec.id}"
        if spec.status != "runnable" or self.dry_run:
            status, why = ("cannot run here", spec.why) if spec.status != "runnable" else ("planned", "")
            return Verdict(subject, status, claims, tolerance=tol, why=why, runs=[o for _, o in runs],
                           estimate=estimate_row(spec), protocol=spec.protocol)
        v = self.check(subject, runs, claims, tol)
        v.estimate, v.protocol = estimate_row(spec), spec.protocol
        return v

    def check_claim(self, claim: str, tolerance: dict[str, Any] | None = None) -> Verdict:
        """`claim`: run overrides and figures, e.g. "model=opt_125m method=gptq method.wbits=4 ppl=31.12"
        (spaces between them); `tolerance`: one for every figure, else conf/verify.yaml's
        claim_tolerance."""
        overrides, claims = [], {}
        for token in claim.split():
            key, _, value = token.partition("=")
            if key in METRICS:
                try:
                    claims[METRICS[key]] = float(value)
                except ValueError:
                    raise ValueError(f"claim '{claim}': {key}={value} is not a number") from None
            else:
                overrides.append(token)
        if not claims:
            raise ValueError(f"claim '{claim}' names no figure: add one of {', '.join(sorted(METRICS))}=<value>")
        defaults = verify_conf()["claim_tolerance"]
        tol = {k: tolerance or defaults[k] for k in claims}
        return self.check(claim, [("any", overrides)], claims, tol)
