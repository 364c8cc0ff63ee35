"""The claims registry (conf/claims/<table>.yaml): what a claim of the survey compares and how.

A claim quotes the survey, names where it stands, and states a predicate: which runs it compares
(selectors over a record's preset, method settings, table row and compression result), the
comparison (one of KINDS, a registry: each kind's sides parsed and its verdict judged in one place)
and its margin. Quality is WikiText-2 perplexity (decoders, lower is better; margins relative:
`rel` 0.02 = the worse run's perplexity is 2% above the better's) or the difference to the
fine-tuned model in %p (encoders, higher is better; margins absolute). Cost is device-hours:
`training.device_hours` of a trained run, else `timing.compress_s` / 3600, on the device the record
names. Speedups are the records' own measurements (tables/speedups.py).

Evaluation over records is tables/findings.py. Nothing here imports methods/ or kernels/."""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from omegaconf import OmegaConf

from tables.build import TABLES, belongs, row_meta
from tables.speedups import Speedup

CLAIMS_DIR = Path(__file__).resolve().parent.parent / "conf" / "claims"
HOLDS, CONTRADICTED, NOT_ENOUGH = "holds", "contradicted", "not enough runs"
VERDICTS = (HOLDS, CONTRADICTED, NOT_ENOUGH)
CAVEAT = ("The reproduced records come from small stand-ins (a 5.3M-parameter Llama trained on WikiText-2, "
          "a MiniLM-L6 fine-tuned on half the SQuAD dev articles), not the survey's models (BERT-base, "
          "LLaMA, OPT, ...), with short training recipes: a contradiction there is a finding about that "
          "setting, not a refutation of the survey.")
NO_MODEL = "-"


class ClaimError(ValueError):
    """A claim the registry cannot hold: one line naming its file and id."""


# ---------------------------------------------------------------------------------------------
# selectors: which records a side of a claim compares
# ---------------------------------------------------------------------------------------------

SELECTOR_KEYS = {"name", "preset", "method", "settings", "table", "cost", "kind", "rate", "rate_basis",
                 "wbits", "abits", "weight_only", "group", "exclude", "dense"}
RATE_TOL = 0.02
WEIGHT_ONLY_ABITS = (None, 16, 32)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def _fits(value: Any, want: Any) -> bool:
    """`value` is what `want` asks: one of a list, within {min, max}, or equal."""
    if isinstance(want, list):
        return any(_fits(value, w) for w in want)
    if isinstance(want, dict):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return value >= want.get("min", -math.inf) and value <= want.get("max", math.inf)
    return _close(value, want)


def _words(want: Any) -> str:
    if isinstance(want, list):
        return "|".join(map(str, want))
    if isinstance(want, dict):
        return " ".join(f"{'≥' if k == 'min' else '≤'}{v}" for k, v in want.items())
    return str(want)


@dataclass(frozen=True)
class Selector:
    """A side of a claim: one run configuration (or, `group`, every configuration it matches)."""

    spec: dict[str, Any]
    tables: tuple[str, ...]

    @property
    def group(self) -> bool:
        return bool(self.spec.get("group"))

    @property
    def dense(self) -> bool:
        return bool(self.spec.get("dense"))

    @property
    def name(self) -> str:
        return self.spec.get("name") or self.describe()

    def describe(self) -> str:
        """The selector in words: what a run must be to be taken (and what to run where none is)."""
        if self.dense:
            return "the dense model"
        s = self.spec
        parts = [f"preset {_words(s['preset'])}" if "preset" in s else "",
                 f"method {_words(s['method'])}" if "method" in s else "",
                 ", ".join(f"{k}={_words(v)}" for k, v in (s.get("settings") or {}).items()),
                 f"{s['cost']}-cost" if "cost" in s else "", f"kind {_words(s['kind'])}" if "kind" in s else "",
                 f"rate {_words(s['rate'])}" if "rate" in s else "",
                 f"rate basis {s['rate_basis']}" if "rate_basis" in s else "",
                 f"W{_words(s['wbits'])}" if "wbits" in s else "", f"A{_words(s['abits'])}" if "abits" in s else "",
                 "weight-only" if s.get("weight_only") else "",
                 f"not {Selector(s['exclude'], self.tables).describe()}" if "exclude" in s else ""]
        where = f"{'every ' if self.group else ''}{'/'.join(self.tables)} run"
        shown = ", ".join(p for p in parts if p)
        return f"{where}: {shown}" if shown else where

    def matches(self, record: dict) -> bool:
        if self.dense:
            return record.get("kind") == "dense"
        s = self.spec
        if not any(belongs(TABLES[t], record) for t in self.tables):
            return False
        comp, method = record["compression"], record["identity"].get("method") or {}
        if "preset" in s and not _fits(record["preset"], s["preset"]):
            return False
        if "method" in s and not _fits(method.get("name"), s["method"]):
            return False
        settings = method.get("settings") or {}
        if any(k not in settings or not _fits(settings[k], v) for k, v in (s.get("settings") or {}).items()):
            return False
        if "cost" in s and not any(belongs(TABLES[t], record) and row_meta(record, t).cost == s["cost"]
                                   for t in self.tables):
            return False
        for key, path in (("kind", "kind"), ("rate_basis", "rate_basis"), ("wbits", "wbits"), ("abits", "abits")):
            if key in s and not _fits(comp.get(path), s[key]):
                return False
        if "rate" in s:
            want = s["rate"]
            rate = comp.get("comp_rate")
            if rate is None or not (_fits(rate, want) if isinstance(want, (dict, list)) else abs(rate - want) <= RATE_TOL):
                return False
        if "weight_only" in s and (comp.get("abits") in WEIGHT_ONLY_ABITS) != bool(s["weight_only"]):
            return False
        if "exclude" in s and Selector(s["exclude"], self.tables).matches(record):
            return False
        return True


def config_key(record: dict) -> str:
    """The run configuration: the identity without any seed (run, method or training seed)."""
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "seed"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    return json.dumps(strip(record["identity"]), sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------
# what is compared: quality, cost, speedup, a field
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    name: str
    lower_better: bool
    unit: str


METRICS = {"decoder": Metric("WikiText-2 perplexity", True, ""),
           "encoder": Metric("difference to the fine-tuned model (%p)", False, " %p")}


def quality(record: dict | None, role: str) -> float | None:
    """Perplexity on WikiText-2 (decoders) or the %p difference to the fine-tuned model (encoders;
    the fine-tuned model itself is 0 by definition, with or without its record)."""
    if role == "encoder":
        if record is None or record.get("kind") == "dense":
            return 0.0
        return None if record.get("delta") is None else float(record["delta"])
    if record is None:
        return None
    ppl = (record.get("metrics", {}).get("wikitext2") or {}).get("ppl")
    return None if ppl is None else float(ppl)


@dataclass(frozen=True)
class Cost:
    hours: float
    device: str
    basis: str    # "training" | "compression"


def run_cost(costs: list[Cost]) -> Cost:
    """One run configuration's cost over its seeds: the least, as a timing takes the least of its
    repeats. The seeds do the same work; a busy machine only adds time to some of them."""
    return min(costs, key=lambda c: c.hours)


def cost_of(record: dict) -> Cost | None:
    """Device-hours of the compression: a trained run's `training.device_hours` (on its training
    device), else its `timing.compress_s` / 3600 (on its hardware)."""
    t = record.get("training")
    if t and t.get("device_hours") is not None:
        return Cost(float(t["device_hours"]), str(t.get("device") or record.get("hardware", {}).get("name", "?")),
                    "training")
    s = (record.get("timing") or {}).get("compress_s")
    if s is None:
        return None
    return Cost(float(s) / 3600, str(record.get("hardware", {}).get("name", "?")), "compression")


def field_of(record: dict, dotted: str) -> float | None:
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


@dataclass(frozen=True)
class Margin:
    """How far a run must beat another: `rel` (perplexity: the worse is this fraction above the
    better) or `abs` (the metric's own units: %p, or perplexity points)."""

    rel: float | None = None
    abs: float | None = None

    @property
    def value(self) -> float:
        return self.rel if self.rel is not None else self.abs

    def advantage(self, a: float, b: float, metric: Metric) -> float:
        """How much `a` beats `b`, in this margin's units (negative: `a` is worse)."""
        if self.rel is not None:
            if metric.lower_better:
                return b / a - 1
            return a / b - 1 if b else math.copysign(math.inf, a)
        return (b - a) if metric.lower_better else (a - b)

    def show(self, x: float, metric: Metric) -> str:
        if self.rel is not None:
            return f"{x * 100:+.1f}%"
        return f"{x:+.2f}{metric.unit}"

    def words(self, metric: Metric) -> str:
        if self.rel is not None:
            return f"{self.rel * 100:g}%"
        return f"{self.abs:g}{metric.unit or ' ppl'}"


# ---------------------------------------------------------------------------------------------
# the claim kinds: a registry, each kind parsed and judged in one place
# ---------------------------------------------------------------------------------------------

Values = dict[str, list[tuple[str, Any]]]     # side -> [(member name, its value)]


@dataclass(frozen=True)
class Judgement:
    holds: bool
    text: str
    figure: float | None = None     # the number the margin is held against (per seed: robustness)


@dataclass(frozen=True)
class Kind:
    name: str
    quantity: str                                   # quality | cost | speedup | field
    keys: tuple[str, ...]                           # the YAML keys of its sides
    params: tuple[str, ...]                         # its other YAML keys
    sides: Callable[[dict], dict[str, Any]]         # spec -> {side: selector spec}
    judge: Callable[["Claim", Values], Judgement]


KINDS: dict[str, Kind] = {}


def register(name: str, quantity: str, keys: tuple[str, ...], params: tuple[str, ...] = ()):
    def wrap(fns: tuple[Callable, Callable]) -> tuple[Callable, Callable]:
        KINDS[name] = Kind(name, quantity, keys, params, *fns)
        return fns
    return wrap


def _listed(spec: dict, key: str, prefix: str) -> dict[str, Any]:
    items = spec[key] if isinstance(spec[key], list) else [spec[key]]
    return {f"{prefix}{i}" if len(items) > 1 else prefix: s for i, s in enumerate(items, 1)}


def _one(values: Values, side: str) -> tuple[str, Any]:
    return values[side][0]


def _fmt(claim: "Claim", v: float) -> str:
    return f"{v:.2f}" if claim.metric.lower_better else f"{v:+.2f}"


def _vs(claim: "Claim", a: tuple[str, float], b: tuple[str, float]) -> tuple[float, str]:
    adv = claim.margin.advantage(a[1], b[1], claim.metric)
    return adv, (f"{a[0]} {_fmt(claim, a[1])} vs {b[0]} {_fmt(claim, b[1])}: "
                 f"{claim.margin.show(adv, claim.metric)}")


def _better_sides(spec: dict) -> dict[str, Any]:
    return {"a": spec["a"], **_listed(spec, "b", "b")}


def _better(claim: "Claim", values: Values) -> Judgement:
    a = _one(values, "a")
    results = [_vs(claim, a, _one(values, side)) for side in values if side.startswith("b")]
    worst = min(adv for adv, _ in results)
    return Judgement(worst >= claim.margin.value, "; ".join(t for _, t in results)
                     + f" (must be ≥ {claim.margin.words(claim.metric)})", worst)


register("better", "quality", ("a", "b"), ("margin", "budget"))((_better_sides, _better))


def _close_sides(spec: dict) -> dict[str, Any]:
    return {"a": spec["a"], "b": spec["b"]}


def _close_judge(claim: "Claim", values: Values) -> Judgement:
    adv, text = _vs(claim, _one(values, "a"), _one(values, "b"))
    return Judgement(abs(adv) <= claim.margin.value, f"{text} (|gap| must be ≤ {claim.margin.words(claim.metric)})", adv)


register("close", "quality", ("a", "b"), ("margin",))((_close_sides, _close_judge))


def _not_worse_sides(spec: dict) -> dict[str, Any]:
    return {**_listed(spec, "a", "a"), "b": spec["b"]}


def _not_worse(claim: "Claim", values: Values) -> Judgement:
    b = _one(values, "b")
    results = [_vs(claim, _one(values, side), b) for side in values if side.startswith("a")]
    worst = min(adv for adv, _ in results)
    return Judgement(worst >= -claim.margin.value, "; ".join(t for _, t in results)
                     + f" (no worse than −{claim.margin.words(claim.metric)})", worst)


register("not_worse", "quality", ("a", "b"), ("margin",))((_not_worse_sides, _not_worse))


def _order_sides(spec: dict) -> dict[str, Any]:
    if len(spec["runs"]) < 3:
        raise ValueError("an order names at least three runs (two: use `better`)")
    return {f"r{i}": s for i, s in enumerate(spec["runs"], 1)}


def _order(claim: "Claim", values: Values) -> Judgement:
    runs = [_one(values, f"r{i}") for i in range(1, len(values) + 1)]
    steps = [_vs(claim, a, b) for a, b in zip(runs, runs[1:])]
    worst = min(adv for adv, _ in steps)
    chain = " > ".join(f"{n} {_fmt(claim, v)}" for n, v in runs)
    return Judgement(worst >= claim.margin.value, f"{chain}; steps " + ", ".join(
        claim.margin.show(adv, claim.metric) for adv, _ in steps) + f" (each ≥ {claim.margin.words(claim.metric)})",
        worst)


register("order", "quality", ("runs",), ("margin",))((_order_sides, _order))


def _gap_sides(spec: dict) -> dict[str, Any]:
    return {"low_a": spec["low"]["a"], "low_b": spec["low"]["b"], "high_a": spec["high"]["a"],
            "high_b": spec["high"]["b"]}


def _gap_grows(claim: "Claim", values: Values) -> Judgement:
    """The gap at the high rate is at least `factor` × the gap at the low rate, and at least the margin."""
    factor = float(claim.params.get("factor", 2.0))
    low, lt = _vs(claim, _one(values, "low_a"), _one(values, "low_b"))
    high, ht = _vs(claim, _one(values, "high_a"), _one(values, "high_b"))
    ok = high >= claim.margin.value and high >= factor * low
    ratio = f"{high / low:.2f}×" if low > 0 else "from none"
    return Judgement(ok, f"low: {lt}; high: {ht}; grows {ratio} (must be ≥ {factor:g}× and ≥ "
                         f"{claim.margin.words(claim.metric)})", high)


register("gap_grows", "quality", ("low", "high"), ("margin", "factor"))((_gap_sides, _gap_grows))


def _two_groups(spec: dict) -> dict[str, Any]:
    return {"a": {"group": True, **spec["a"]}, "b": {"group": True, **spec["b"]}}


def _members(claim: "Claim", side: list[tuple[str, float]]) -> str:
    return ", ".join(f"{n} {_fmt(claim, v)}" for n, v in side)


def _group_better(claim: "Claim", values: Values) -> Judgement:
    a = statistics.median(v for _, v in values["a"])
    b = statistics.median(v for _, v in values["b"])
    adv = claim.margin.advantage(a, b, claim.metric)
    return Judgement(adv >= claim.margin.value,
                     f"median {_fmt(claim, a)} [{_members(claim, values['a'])}] vs median {_fmt(claim, b)} "
                     f"[{_members(claim, values['b'])}]: {claim.margin.show(adv, claim.metric)} "
                     f"(must be ≥ {claim.margin.words(claim.metric)})", adv)


register("group_better", "quality", ("a", "b"), ("margin",))((_two_groups, _group_better))


def _cost_sides(spec: dict) -> dict[str, Any]:
    return {"a": {"group": True, **spec["a"]}, "b": {"group": True, **spec["b"]}}


def _hours(h: float) -> str:
    return f"{h * 3600:.3g} s" if h < 1 / 60 else f"{h:.3g} h"


def _cost_ratio(claim: "Claim", values: Values) -> Judgement:
    factor = float(claim.params["factor"])
    a = statistics.median(c.hours for _, c in values["a"])
    b = statistics.median(c.hours for _, c in values["b"])
    ratio = a / b if b > 0 else math.inf
    devices = sorted({c.device for side in values.values() for _, c in side})

    def listing(side: str) -> str:
        return ", ".join(f"{n} {_hours(c.hours)}" for n, c in values[side])
    return Judgement(ratio >= factor, f"median {_hours(a)} [{listing('a')}] vs median {_hours(b)} [{listing('b')}]: "
                                      f"{ratio:.3g}× (must be ≥ {factor:g}×; device-hours on {', '.join(devices)})",
                     ratio)


register("cost_ratio", "cost", ("a", "b"), ("factor",))((_cost_sides, _cost_ratio))


def _speedup_sides(spec: dict) -> dict[str, Any]:
    out = {}
    for key in ("faster", "not_faster"):
        for i, s in enumerate(spec.get(key) or [], 1):
            out[f"{key}{i}"] = s
    if not out:
        raise ValueError("a speedup claim names `faster` and/or `not_faster` runs")
    return out


def _sp(s: Speedup) -> str:
    return f"{s.median:.2f}× [{s.q1:.2f}, {s.q3:.2f}]"


def _speedup(claim: "Claim", values: Values) -> Judgement:
    """Every `faster` run measured faster than dense (its spread above 1×) by at least `min`; no
    `not_faster` run measured faster."""
    least = float(claim.params.get("min", 1.0))
    fast = [(n, s) for side, ms in values.items() if side.startswith("faster") for n, s in ms]
    slow = [(n, s) for side, ms in values.items() if side.startswith("not_faster") for n, s in ms]
    ok = all(s.claim == "faster" and s.median >= least for _, s in fast) and all(s.claim != "faster" for _, s in slow)
    parts = []
    if fast:
        parts.append(f"faster (≥ {least:g}×): " + ", ".join(f"{n} {_sp(s)}" for n, s in fast))
    if slow:
        parts.append("not faster: " + ", ".join(f"{n} {_sp(s)}" for n, s in slow))
    lowest = min((s.median for _, s in fast), default=math.nan)
    return Judgement(ok, "; ".join(parts), lowest)


register("speedup", "speedup", ("faster", "not_faster"), ("min",))((_speedup_sides, _speedup))


def _top_speedup(claim: "Claim", values: Values) -> Judgement:
    a = max(values["a"], key=lambda m: m[1].median)
    b = max(values["b"], key=lambda m: m[1].median)
    return Judgement(a[1].median > b[1].median and a[1].q1 > b[1].q3,
                     f"fastest {a[0]} {_sp(a[1])} vs fastest {b[0]} {_sp(b[1])} (spreads must not overlap)",
                     a[1].median / b[1].median)


register("top_speedup", "speedup", ("a", "b"))((_two_groups, _top_speedup))


def _at_most_sides(spec: dict) -> dict[str, Any]:
    return {"a": spec["a"]}


def _at_most(claim: "Claim", values: Values) -> Judgement:
    name, v = _one(values, "a")
    bound = float(claim.params["max"])
    return Judgement(v <= bound, f"{name}: {claim.params['field']} = {v:.4g} (must be ≤ {bound:g})", v)


register("at_most", "field", ("a",), ("field", "max"))((_at_most_sides, _at_most))


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------

CLAIM_KEYS = {"id", "source", "quote", "kind", "needs", "tables"}


@dataclass(frozen=True)
class Claim:
    id: str
    table: str
    tables: tuple[str, ...]
    source: str
    quote: str
    kind: Kind
    sides: dict[str, Selector]
    margin: Margin
    params: dict[str, Any]
    needs: str = ""

    @property
    def role(self) -> str:
        return TABLES[self.table].role

    @property
    def metric(self) -> Metric:
        return METRICS[self.role]


def _margin(spec: Any, where: str) -> Margin:
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("rel", "abs"):
        raise ClaimError(f"{where}: margin must be {{rel: x}} or {{abs: x}}, got {spec!r}")
    return Margin(**{k: float(v) for k, v in spec.items()})


def _claim(entry: dict, table: str, defaults: dict, where: str) -> Claim:
    cid = entry.get("id")
    where = f"{where}: claim {cid}"
    if not cid or not entry.get("quote") or not entry.get("source"):
        raise ClaimError(f"{where}: every claim needs an id, a quote and a source")
    kind = KINDS.get(entry.get("kind"))
    if kind is None:
        raise ClaimError(f"{where}: unknown kind {entry.get('kind')!r}; the kinds are {', '.join(KINDS)}")
    unknown = set(entry) - CLAIM_KEYS - set(kind.keys) - set(kind.params)
    if unknown:
        raise ClaimError(f"{where}: unknown key(s) {sorted(unknown)} for kind {kind.name} "
                         f"(it takes {', '.join(kind.keys + kind.params)})")
    tables = tuple(entry.get("tables") or [table])
    try:
        raw = kind.sides(entry)
    except (KeyError, TypeError) as err:
        raise ClaimError(f"{where}: kind {kind.name} needs {', '.join(kind.keys)} ({err})") from None
    except ValueError as err:
        raise ClaimError(f"{where}: {err}") from None
    sides = {}
    for side, spec in raw.items():
        if not isinstance(spec, dict):
            raise ClaimError(f"{where}: side {side} must be a selector (a mapping), got {spec!r}")
        bad = set(spec) - SELECTOR_KEYS
        if bad:
            raise ClaimError(f"{where}: side {side}: unknown selector key(s) {sorted(bad)}; "
                             f"the keys are {', '.join(sorted(SELECTOR_KEYS))}")
        own = spec.get("table", list(tables))
        own = tuple(own if isinstance(own, list) else [own])
        for t in own:
            if t not in TABLES:
                raise ClaimError(f"{where}: unknown table {t!r}; the tables are {', '.join(TABLES)}")
        sides[side] = Selector(spec, own)
    for t in tables:
        if t not in TABLES:
            raise ClaimError(f"{where}: unknown table {t!r}; the tables are {', '.join(TABLES)}")
    roles = {TABLES[t].role for s in sides.values() for t in s.tables} | {TABLES[t].role for t in tables}
    if len(roles) > 1:
        raise ClaimError(f"{where}: compares decoder and encoder tables; their metrics differ")
    params = {k: entry[k] for k in kind.params if k in entry and k != "margin"}
    for need in {"cost_ratio": ("factor",), "at_most": ("field", "max")}.get(kind.name, ()):
        if need not in params:
            raise ClaimError(f"{where}: kind {kind.name} needs `{need}`")
    margin = _margin(entry.get("margin", defaults.get("margin", {"abs": 0.0})), where)
    return Claim(cid, table, tables, entry["source"], " ".join(str(entry["quote"]).split()), kind, sides, margin,
                 params, " ".join(str(entry.get("needs", "")).split()))


def load_claims(tables: Iterable[str] | None = None, ids: Iterable[str] | None = None,
                folder: Path = CLAIMS_DIR) -> list[Claim]:
    """Every claim of conf/claims/<table>.yaml (those of `tables`; those named `ids`), checked:
    an unknown table, kind, key or id is a ClaimError with one line."""
    tables = list(tables) if tables else list(TABLES)
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ClaimError(f"unknown table(s) {unknown}; the tables are {', '.join(TABLES)}")
    out: list[Claim] = []
    for path in sorted(folder.glob("*.yaml")):
        doc = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        table = doc.get("table")
        if table not in TABLES:
            raise ClaimError(f"{path}: unknown table {table!r}; the tables are {', '.join(TABLES)}")
        out += [_claim(e, table, doc.get("defaults") or {}, str(path)) for e in doc.get("claims") or []]
    seen: set[str] = set()
    for c in out:
        if c.id in seen:
            raise ClaimError(f"claim id {c.id} appears twice in {folder}")
        seen.add(c.id)
    chosen = [c for c in out if c.table in tables]
    if ids:
        ids = list(ids)
        missing = [i for i in ids if i not in seen]
        if missing:
            raise ClaimError(f"unknown claim id(s) {missing}; `python scripts/findings.py list=true` names them")
        chosen = [c for c in chosen if c.id in ids]
    return chosen
