"""The survey's checkable conclusions checked on run records, and the reports of the verdicts.

Each claim of the registry (tables/claims.py, conf/claims/) is evaluated once per (model, task) that
has records of its tables, under one protocol: the runs compared are records of the same model and
task; a selector that matches two run configurations (say, two calibrations) is ambiguous and
decides nothing.

Verdicts: holds, contradicted, or not enough runs (a compared run is missing; the evidence names
it). Seeds: records of one configuration that differ only by a seed are one run; the verdict is
taken on the mean over its seeds, and the claim is also judged on each seed that every compared run
has ("holds in k of n seeds", with the per-seed figure); a run's cost is its least over its seeds
(the same work each time, on a machine that may have been busy). A record that ran less than its protocol
(`protocol.complete` false) enters a verdict only with `include_partial`, and is then marked.
Speedups are compared on one device at a time.

Nothing here imports methods/ or kernels/: records only."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tables.build import TABLES, belongs, is_partial, row_meta
from tables.claims import (CAVEAT, CONTRADICTED, HOLDS, NO_MODEL, NOT_ENOUGH, VERDICTS, Claim, Cost, Judgement,
                           Selector, Values, config_key, cost_of, field_of, quality, run_cost)
from tables.speedups import Speedup, speedup_of

CSV_COLUMNS = ["id", "claim", "source", "model", "task", "verdict", "evidence", "records",
               "kind", "metric", "margin", "seeds", "partial", "needs"]

# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------

@dataclass
class Finding:
    claim: Claim
    model: str
    task: str
    verdict: str
    evidence: str
    records: list[str] = field(default_factory=list)
    seeds: str = ""
    partial: str = ""

    def row(self) -> dict[str, str]:
        c = self.claim
        return {"id": c.id, "claim": c.quote, "source": c.source, "model": self.model, "task": self.task,
                "verdict": self.verdict, "evidence": self.evidence, "records": ";".join(self.records),
                "kind": c.kind.name, "metric": c.metric.name if c.kind.quantity == "quality" else c.kind.quantity,
                "margin": c.margin.words(c.metric) if c.kind.quantity == "quality" else "",
                "seeds": self.seeds, "partial": self.partial,
                "needs": c.needs if self.verdict == NOT_ENOUGH else ""}


@dataclass
class Member:
    """One run configuration on a side: its records by seed (None: the dense model, every seed's)."""

    name: str
    records: dict[Any, dict | None]


def _seed(record: dict) -> Any:
    return record.get("seed", record["identity"].get("seed"))


def _member_name(sel: Selector, records: list[dict]) -> str:
    if not sel.group and sel.spec.get("name"):
        return sel.spec["name"]
    r = records[0]
    table = next(t for t in sel.tables if belongs(TABLES[t], r))
    label = row_meta(r, table).label
    settings = r["identity"]["method"].get("settings") or {}
    shown = [f"{k}={settings[k]}" for k in (sel.spec.get("settings") or {}) if k in settings]
    return f"{label} ({r['preset']}{', ' + ', '.join(shown) if shown else ''})"


def _resolve(sel: Selector, usable: list[dict], dense: dict | None) -> list[Member] | str:
    """The members of a side, or why there are none to compare."""
    if sel.dense:
        return [Member(sel.spec.get("name", "dense"), {None: dense})]
    configs: dict[str, list[dict]] = {}
    for r in usable:
        if sel.matches(r):
            configs.setdefault(config_key(r), []).append(r)
    if not configs:
        return f"no run of {sel.describe()}"
    if len(configs) > 1 and not sel.group:
        return (f"ambiguous: {len(configs)} run configurations match {sel.describe()} (records "
                f"{', '.join(rs[0]['id'] for rs in configs.values())}); the claim must say which")
    return [Member(_member_name(sel, rs), {_seed(r): r for r in rs}) for rs in configs.values()]


def _quantity(claim: Claim, record: dict | None) -> Any:
    q = claim.kind.quantity
    if q == "quality":
        return quality(record, claim.role)
    if record is None:
        return None
    if q == "cost":
        return cost_of(record)
    if q == "speedup":
        return speedup_of(record)
    return field_of(record, claim.params["field"])


def _over_seeds(values: list[Any]) -> Any:
    """One run's value over its seeds: the mean of a quality, the median of the speedups' quartiles,
    the least cost (`run_cost`)."""
    first = values[0]
    if isinstance(first, Cost):
        return run_cost(values)
    if isinstance(first, Speedup):
        med = statistics.median
        return Speedup(med(s.median for s in values), med(s.q1 for s in values), med(s.q3 for s in values),
                       sum(s.repeats for s in values), first.device, first.basis)
    return statistics.mean(values)


def _values(claim: Claim, sides: dict[str, list[Member]], seed: Any = "mean") -> Values | None:
    """Each side's members with their value (the mean over seeds, or at one seed); None where a
    single side has no value there. Members of a group without one are left out."""
    out: Values = {}
    for side, members in sides.items():
        got = []
        for m in members:
            recs = list(m.records.values()) if seed == "mean" or None in m.records else \
                ([m.records[seed]] if seed in m.records else [])
            vals = [v for v in (_quantity(claim, r) for r in recs) if v is not None]
            if vals:
                got.append((m.name, _over_seeds(vals)))
        if not got:
            return None
        out[side] = got
    return out


def _budget(claim: Claim, sides: dict[str, list[Member]]) -> str | None:
    """Why the compared runs do not share a budget (`budget: {field, slack}`: side a's field, e.g.
    bits per weight, at most each other side's plus the slack), or None."""
    spec = claim.params.get("budget")
    if not spec:
        return None
    f, slack = spec["field"], float(spec.get("slack", 0.0))

    def of(side: str) -> float | None:
        vals = [field_of(r, f"compression.{f}") for m in sides[side] for r in m.records.values() if r]
        vals = [v for v in vals if v is not None]
        return max(vals) if vals else None
    a = of("a")
    for side in sides:
        if side == "a":
            continue
        b = of(side)
        if a is None or b is None or a > b + slack:
            return (f"not at an equal budget: {sides['a'][0].name} has {f} {a}, {sides[side][0].name} has {b} "
                    f"(the first may be at most {slack:g} above)")
    return None


def _used(sides: dict[str, list[Member]]) -> list[dict]:
    return list({r["id"]: r for ms in sides.values() for m in ms for r in m.records.values() if r}.values())


def _judged(claim: Claim, sides: dict[str, list[Member]]) -> tuple[str, str, str]:
    """(verdict, evidence, seeds) of resolved sides on the seed means, with the per-seed verdicts."""
    values = _values(claim, sides)
    if values is None:
        return NOT_ENOUGH, "a compared run has no value for this check", ""
    j = claim.kind.judge(claim, values)
    seeds = [set(m.records) - {None} for ms in sides.values() for m in ms]
    per_side = [set().union(*(set(m.records) - {None} for m in ms)) for ms in sides.values()]
    per_side = [s for s in per_side if s]
    common = sorted(set.intersection(*per_side), key=str) if per_side else []
    several = any(len(s) > 1 for s in seeds)
    evidence = j.text
    kept = 0
    if common:
        per_seed = []
        for s in common:
            vs = _values(claim, sides, s)
            if vs is None:
                continue
            one = claim.kind.judge(claim, vs)
            kept += one.holds
            per_seed.append((s, one))
        if len(per_seed) > 1 or several:
            evidence += (f"; holds in {kept} of {len(per_seed)} seeds ("
                         + ", ".join(f"seed {s}: {_figure(claim, o)}" for s, o in per_seed) + ")"
                         + ("; " + ("least cost" if claim.kind.quantity == "cost" else "means")
                            + " over every seed of each run" if several else ""))
        seeds_col = f"{kept}/{len(per_seed)}"
    else:
        seeds_col = "unpaired"
    return (HOLDS if j.holds else CONTRADICTED), evidence, seeds_col


def _figure(claim: Claim, j: Judgement) -> str:
    if j.figure is None or (isinstance(j.figure, float) and math.isnan(j.figure)):
        return "holds" if j.holds else "contradicted"
    if claim.kind.quantity == "quality":
        return claim.margin.show(j.figure, claim.metric)
    return f"{j.figure:.3g}"


def _speedup_devices(sides: dict[str, list[Member]]) -> dict[str, dict[str, list[Member]]]:
    """The sides restricted to each device with a measurement for every side (groups: for some
    member): a speedup is compared with speedups measured on the same device only."""
    devices: set[str] = set()
    for ms in sides.values():
        for m in ms:
            devices |= {s.device for r in m.records.values() if r and (s := speedup_of(r))}
    out = {}
    for d in sorted(devices):
        kept: dict[str, list[Member]] = {}
        for side, ms in sides.items():
            on = [Member(m.name, {k: r for k, r in m.records.items() if r and (s := speedup_of(r)) and s.device == d})
                  for m in ms]
            kept[side] = [m for m in on if m.records]
        if all(kept.values()):
            out[d] = kept
    return out


def _group_of(record: dict) -> tuple[str, str]:
    return record["config"]["model"]["name"], record["task"]


def _dense_for(records: list[dict], usable_ids: set[str], group: list[dict]) -> dict | None:
    counts: dict[str, int] = {}
    for r in group:
        if r.get("dense_id"):
            counts[r["dense_id"]] = counts.get(r["dense_id"], 0) + 1
    by_id = {r["id"]: r for r in records}
    for did, _ in sorted(counts.items(), key=lambda kv: -kv[1]):
        if did in by_id and did in usable_ids:
            return by_id[did]
    return None


def evaluate_claim(claim: Claim, records: list[dict], include_partial: bool = False) -> list[Finding]:
    """The claim's findings: one per (model, task) with records of its tables."""
    pool = [r for r in records if r.get("kind") == "compressed"
            and any(belongs(TABLES[t], r) for s in claim.sides.values() for t in s.tables)]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in pool:
        groups.setdefault(_group_of(r), []).append(r)
    if not groups:
        return [Finding(claim, NO_MODEL, NO_MODEL, NOT_ENOUGH,
                        f"no {claim.role} records of {'/'.join(claim.tables)} in the sets read")]
    dense_pool = [r for r in records if r.get("kind") == "dense" and r.get("role") == claim.role]
    out = []
    for (model, task), group in sorted(groups.items()):
        usable = [r for r in group if include_partial or not is_partial(r)]
        dense_all = [r for r in dense_pool if _group_of(r) == (model, task)]
        usable_ids = {r["id"] for r in usable} | {r["id"] for r in dense_all
                                                 if include_partial or not is_partial(r)}
        dense = _dense_for(records, usable_ids, group)
        dense_missing = claim.role == "decoder" and dense is None
        left_out = len(group) - len(usable)
        note = (f" ({left_out} partial-protocol record(s) left out: include_partial=true counts them, marked)"
                if left_out else "")
        sides: dict[str, list[Member]] = {}
        problems = []
        for side, sel in claim.sides.items():
            if sel.dense and dense_missing:
                problems.append("no dense record of this model (its perplexity is the reference)")
                continue
            got = _resolve(sel, usable, dense)
            if isinstance(got, str):
                problems.append(got)
            else:
                sides[side] = got
        if problems:
            out.append(Finding(claim, model, task, NOT_ENOUGH, "; ".join(dict.fromkeys(problems)) + note))
            continue
        budget = _budget(claim, sides)
        if budget:
            out.append(Finding(claim, model, task, NOT_ENOUGH, budget + note, [r["id"] for r in _used(sides)]))
            continue
        if claim.kind.quantity == "speedup":
            out.append(_speedup_finding(claim, model, task, sides, note))
            continue
        verdict, evidence, seeds = _judged(claim, sides)
        used = _used(sides)
        out.append(Finding(claim, model, task, verdict, evidence, [r["id"] for r in used], seeds, _partial(used)))
    return out


def _speedup_finding(claim: Claim, model: str, task: str, sides: dict[str, list[Member]], note: str) -> Finding:
    by_device = _speedup_devices(sides)
    if not by_device:
        unmeasured = sorted({m.name for ms in sides.values() for m in ms
                             if not any(r and speedup_of(r) for r in m.records.values())})
        return Finding(claim, model, task, NOT_ENOUGH,
                       "no device on which every compared run has a measured speedup"
                       + (f" (none measured: {', '.join(unmeasured)})" if unmeasured else "") + note)
    verdicts, texts, used, seeds = [], [], [], []
    for device, kept in by_device.items():
        v, e, s = _judged(claim, kept)
        verdicts.append(v)
        texts.append(f"on {device}: {e}")
        used += _used(kept)
        seeds.append(s)
    verdict = CONTRADICTED if CONTRADICTED in verdicts else (HOLDS if HOLDS in verdicts else NOT_ENOUGH)
    used = list({r["id"]: r for r in used}.values())
    return Finding(claim, model, task, verdict, "; ".join(texts), [r["id"] for r in used], "; ".join(seeds),
                   _partial(used))


def _partial(used: list[dict]) -> str:
    cut = sorted({why for r in used if "protocol" in r and is_partial(r) for why in r["protocol"]["partial"]})
    return "; ".join(cut)


def evaluate(claims: Iterable[Claim], records: Iterable[dict], include_partial: bool = False) -> list[Finding]:
    records = list(records)
    return [f for c in claims for f in evaluate_claim(c, records, include_partial)]


# ---------------------------------------------------------------------------------------------
# the reports: CSV, Markdown, LaTeX
# ---------------------------------------------------------------------------------------------

POLICY = ("Each verdict compares records of one model and task. Records of one configuration that differ only by "
          "their seed are one run: the verdict is taken on the mean over its seeds, and the claim is judged on "
          "each seed every compared run has as well (`seeds`: holds in k of n). Partial-protocol records "
          "(fewer examples or windows than the protocol) count only with include_partial=true and are then "
          "marked (*). Cost is device-hours: training.device_hours for trained runs, timing.compress_s / 3600 "
          "for post-training ones, on the device each record names; a run's cost is its least over its seeds "
          "(the same work each time, on a machine that may have been busy).")


def write_csv(findings: list[Finding], path: Path) -> Path:
    import csv
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for f in findings:
            w.writerow(f.row())
    return path


def _counts(findings: list[Finding]) -> str:
    return ", ".join(f"{sum(f.verdict == v for f in findings)} {v}" for v in VERDICTS)


def write_markdown(findings: list[Finding], path: Path, sources: list[str]) -> Path:
    lines = ["# The survey's conclusions, checked on these records", "",
             f"**Caveat.** {CAVEAT}", "", POLICY, "",
             f"Records read from: {', '.join(sources) or '(none)'}. Verdicts: {_counts(findings)}.", ""]
    for f in findings:
        mark = "*" if f.partial else ""
        lines.append(f"- **{f.claim.id}** ({f.claim.source}; {f.model}): **{f.verdict}**{mark} — "
                     f"“{f.claim.quote}” — {f.evidence}")
    needs = [(f.claim.id, f.model, f.claim.needs + ("; or count the partial-protocol records already there "
                                                    "(include_partial=true)" if "partial-protocol" in f.evidence else ""))
             for f in findings if f.verdict == NOT_ENOUGH and f.claim.needs]
    if needs:
        lines += ["", "## Runs that would decide the 'not enough runs' claims", ""]
        lines += [f"- {cid} ({model}): {need}" for cid, model, need in needs]
    if any(f.partial for f in findings):
        lines += ["", "*: the verdict counts partial-protocol records (include_partial=true)."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_latex(findings: list[Finding], path: Path) -> Path:
    """A longtable (needs booktabs and longtable): claim, source, model, verdict, evidence."""
    from tables.latex import latex_escape as esc
    head = r"Claim & Source & Model & Verdict & Evidence \\"
    lines = ["% compbench findings (scripts/findings.py); needs \\usepackage{array,booktabs,longtable}",
             r"\begingroup\scriptsize\setlength{\tabcolsep}{3pt}",
             r"\begin{longtable}{@{}>{\raggedright}p{0.17\linewidth}>{\raggedright}p{0.1\linewidth}>{\raggedright}p{0.09\linewidth}"
             r">{\raggedright}p{0.14\linewidth}>{\raggedright\arraybackslash}p{0.41\linewidth}@{}}",
             r"\caption{The survey's conclusions checked on the reproduced records. " + esc(CAVEAT) + r"}\\",
             r"\toprule", head, r"\midrule", r"\endfirsthead", r"\toprule", head, r"\midrule", r"\endhead",
             r"\bottomrule", r"\endfoot"]
    for f in findings:
        verdict = esc(f.verdict) + (r"$^\ast$" if f.partial else "")
        cid = esc(f.claim.id).replace(r"\_", r"\_\allowbreak{}")   # long ids wrap at their underscores
        lines.append(" & ".join([r"\texttt{" + cid + "}", esc(f.claim.source), esc(f.model), verdict,
                                 esc(f.evidence)]) + r" \\")
    lines += [r"\end{longtable}",
              r"\par\smallskip\raggedright " + esc(POLICY) + (r" $^\ast$: counts partial-protocol records."
                                                               if any(f.partial for f in findings) else ""),
              r"\endgroup", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path
