"""scripts/findings.py: every claim of conf/claims/ judged on records made for it (holds; flipped:
contradicted; a run missing: not enough runs), seeds, partial records, the registry's checks, the
CLI on a folder that holds only some tables, and the published sets (every record id exists)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from eval.records import SCHEMA, record_id
from tables.build import TABLES
from tables.claims import CONTRADICTED, HOLDS, NOT_ENOUGH, ClaimError, Selector, load_claims
from tables.findings import evaluate_claim

CLAIMS = load_claims()
MODEL = "fx-model"
DEFAULT_KIND = {"table2": "structured", "table3": "unstructured", "table4": "quantized", "table5": "quantized",
                "table6": "distilled", "table7": "low_rank"}


# ---------------------------------------------------------------------------------------------
# records made to order
# ---------------------------------------------------------------------------------------------

def _finish(rec: dict) -> dict:
    rec["id"] = record_id(rec["identity"])
    return rec


def dense_record(role: str, model: str = MODEL) -> dict:
    task = "lm" if role == "decoder" else "squad"
    rec = {"schema": SCHEMA, "kind": "dense", "role": role, "task": task, "preset": "dense", "rows": {},
           "identity": {"model": {"name": model}, "task": task, "dense": True}, "config": {"model": {"name": model}},
           "created": "2026-01-01T00:00:00+00:00", "seed": 0, "hardware": {"name": "FixCPU", "device": "cpu"},
           "protocol": {"column": None if role == "decoder" else {"key": "squad", "header": "SQuAD", "metric": "F1",
                                                                  "note": ""},
                        "complete": True, "name": "fixture", "partial": []},
           "metrics": {"wikitext2": {"ppl": 100.0}} if role == "decoder" else {},
           "headline": None if role == "decoder" else 50.0}
    return _finish(rec)


def record(table: str, preset: str, *, method: str | None = None, settings: dict | None = None, cost: str = "low",
           kind: str | None = None, rate: float = 0.5, wbits=None, abits=None, bpw=None, level: float = 0.0,
           seed: int = 0, partial: bool = False, hours: float | None = None, speedup: tuple | None = None,
           device: str = "FixCPU", model: str = MODEL, dense_id: str = "") -> dict:
    """A compressed record of `table`, of quality `level` (0: the dense model's; 1: much worse)."""
    role = TABLES[table].role
    task = "lm" if role == "decoder" else "squad"
    comp = {"kind": kind or DEFAULT_KIND[table], "comp_rate": rate, "rate_basis": "memory", "granularity": "W"}
    if wbits is not None:
        comp.update(wbits=wbits, abits=abits, bits_per_weight=bpw if bpw is not None else float(wbits) + 0.1)
    rec = {"schema": SCHEMA, "kind": "compressed", "role": role, "task": task, "preset": preset,
           "identity": {"model": {"name": model}, "task": task, "preset": preset,
                        "method": {"name": method or preset, "settings": settings or {}, "version": 1}, "seed": seed},
           "config": {"model": {"name": model}}, "created": "2026-01-01T00:00:00+00:00", "seed": seed,
           "dense_id": dense_id, "compression": comp, "hardware": {"name": device, "device": "cpu"},
           "rows": {table: {"label": preset.upper(), "ref": "", "granularity": None, "uniform": "", "cost": cost,
                            "columns": {}}},
           "protocol": {"column": None if role == "decoder" else {"key": "squad", "header": "SQuAD", "metric": "F1",
                                                                  "note": ""},
                        "complete": not partial, "name": "fixture", "partial": ["cut for the test"] if partial else []},
           "timing": {"compress_s": 3600.0 * (hours if hours is not None else 0.01)},
           "flags": []}
    if role == "decoder":
        rec["metrics"] = {"wikitext2": {"ppl": 100.0 * (1 + level)}}
        rec["headline"] = None
    else:
        rec["metrics"] = {}
        rec["delta"], rec["headline"] = -20.0 * level, 50.0 - 20.0 * level
    if speedup is not None:
        med, q1, q3 = speedup
        rec["speedup"] = {"median": med, "q1": q1, "q3": q3, "repeats": 5, "device": device, "dtype": "float32"}
    return _finish(rec)


def _pick(want):
    if isinstance(want, list):
        return want[0]
    if isinstance(want, dict):
        return want.get("min", want.get("max"))
    return want


def members(sel: Selector, side: str) -> list[dict]:
    """The record arguments of the runs a selector takes: one (a group: one per preset, or two)."""
    s = sel.spec
    table = sel.tables[0]
    settings = {k: _pick(v) for k, v in (s.get("settings") or {}).items()}
    wbits = s.get("wbits", settings.get("wbits"))
    abits = s.get("abits", settings.get("abits"))
    if TABLES[table].kinds == frozenset({"quantized"}) and wbits is None:
        wbits = 4
    if s.get("weight_only") is True:
        abits = None
    elif s.get("weight_only") is False:
        abits = 8
    kind = _pick(s["kind"]) if "kind" in s else ("n:m" if str(settings.get("sparsity", "")).count(":") else None)
    base = {"settings": settings, "cost": s.get("cost", "low"), "kind": kind,
            "rate": _pick(s["rate"]) if "rate" in s else 0.5, "wbits": _pick(wbits), "abits": _pick(abits),
            "method": _pick(s["method"]) if "method" in s else None}
    presets = s.get("preset")
    presets = presets if isinstance(presets, list) else [presets] if presets else None
    if presets is None:
        presets = [f"fx_{side}_{i}" for i in range(2 if sel.group else 1)]
    elif not sel.group:
        presets = presets[:1]
    return [{"table": table, "preset": p, **base} for p in presets]


# per kind: each side's setting when the claim should hold (and, flipped, when it should not)
def plan(claim, flipped: bool) -> dict[str, dict]:
    k, sides = claim.kind.name, claim.sides
    good, bad = ({"level": 1.0}, {"level": 0.0}) if flipped else ({"level": 0.0}, {"level": 1.0})
    out: dict[str, dict] = {}
    if k == "better":
        out = {s: (good if s == "a" else bad) for s in sides}
        if flipped and sides["a"].dense:
            out = {s: {"level": -0.5} for s in sides if s != "a"}
    elif k == "close":
        out = {"a": {"level": 0.0}, "b": {"level": 1.0 if flipped else 0.0}}
    elif k == "not_worse":
        out = {s: {"level": 1.0 if flipped else 0.0} for s in sides if s.startswith("a")}
    elif k == "order":
        n = len(sides)
        out = {f"r{i}": {"level": float(n - i if flipped else i - 1)} for i in range(1, n + 1)}
    elif k == "gap_grows":
        small, big = (1.0, 0.01) if flipped else (0.01, 1.0)
        out = {"low_a": {"level": 0.0}, "high_a": {"level": 0.0}, "low_b": {"level": small}, "high_b": {"level": big}}
    elif k == "group_better":
        out = {"a": good, "b": bad}
    elif k == "cost_ratio":
        dear, cheap = {"hours": 10.0}, {"hours": 0.001}
        out = {"a": cheap if flipped else dear, "b": dear if flipped else cheap}
    elif k == "speedup":
        fast, slow = {"speedup": (20.0, 19.0, 21.0)}, {"speedup": (0.8, 0.7, 0.9)}
        out = {s: ((slow if flipped else fast) if s.startswith("faster") else (fast if flipped else slow))
               for s in sides}
    elif k == "top_speedup":
        fast, slow = {"speedup": (5.0, 4.8, 5.2)}, {"speedup": (2.0, 1.9, 2.1)}
        out = {"a": slow if flipped else fast, "b": fast if flipped else slow}
    elif k == "at_most":
        out = {"a": {"rate": float(claim.params["max"]) * (10 if flipped else 0.1)}}
    else:
        raise AssertionError(f"no fixture plan for kind {k}: add one")
    return out


def records_for(claim, flipped: bool = False, drop: str | None = None, seeds: tuple[int, ...] = (0,)) -> list[dict]:
    dense = dense_record(claim.role)
    made: dict[str, dict] = {}
    for side, sel in claim.sides.items():
        if sel.dense or side == drop:
            continue
        setting = plan(claim, flipped).get(side, {})
        for m in members(sel, side):
            for seed in seeds:
                rec = record(**{**m, **setting}, seed=seed, dense_id=dense["id"])
                made[rec["id"]] = rec
    if drop:   # a run of the table that no side asks for, so the model and task still have records
        for table in claim.tables:
            rec = record(table, "bystander", cost="neither", rate=0.99, dense_id=dense["id"])
            made[rec["id"]] = rec
    return [dense, *made.values()]


def first_run_side(claim) -> str:
    return next(s for s, sel in claim.sides.items() if not sel.dense)


# ---------------------------------------------------------------------------------------------
# every claim of the registry
# ---------------------------------------------------------------------------------------------

def test_the_registry_holds_at_least_20_claims_each_quoted_and_placed():
    assert len(CLAIMS) >= 20
    for c in CLAIMS:
        assert c.quote and len(c.quote.split()) <= 30, c.id
        assert c.source and any(w in c.source for w in ("Sec.", "Table", "Fig.")), c.id


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.id for c in CLAIMS])
def test_each_claim_holds_is_contradicted_when_flipped_and_wants_its_missing_run(claim):
    got = evaluate_claim(claim, records_for(claim))
    assert [f.verdict for f in got] == [HOLDS], got[0].evidence
    assert (MODEL, "lm" if claim.role == "decoder" else "squad") == (got[0].model, got[0].task)
    flipped = evaluate_claim(claim, records_for(claim, flipped=True))
    assert [f.verdict for f in flipped] == [CONTRADICTED], flipped[0].evidence
    side = first_run_side(claim)
    missing = evaluate_claim(claim, records_for(claim, drop=side))
    assert [f.verdict for f in missing] == [NOT_ENOUGH]
    assert "no run of" in missing[0].evidence or "no device" in missing[0].evidence


@pytest.mark.parametrize("claim", [c for c in CLAIMS if any(s.dense for s in c.sides.values())
                                   and c.role == "decoder"], ids=lambda c: c.id)
def test_a_decoder_claim_against_the_dense_model_wants_its_dense_record(claim):
    recs = [r for r in records_for(claim) if r["kind"] != "dense"]
    got = evaluate_claim(claim, recs)
    assert got[0].verdict == NOT_ENOUGH and "dense" in got[0].evidence


def test_the_records_named_are_those_compared():
    claim = next(c for c in CLAIMS if c.id == "t5_optq_beats_rtn_3bit")
    recs = records_for(claim) + [record("table5", "awq", settings={"wbits": 3}, wbits=3)]
    got = evaluate_claim(claim, recs)[0]
    compared = {r["id"] for r in recs if r["preset"] in ("gptq", "rtn")}
    assert set(got.records) == compared


# ---------------------------------------------------------------------------------------------
# seeds, partial records, ambiguity, budgets, devices
# ---------------------------------------------------------------------------------------------

def _claim(cid: str):
    return next(c for c in CLAIMS if c.id == cid)


def test_seeds_verdict_on_the_mean_and_holds_in_k_of_n():
    claim = _claim("t5_optq_beats_rtn_3bit")        # OPTQ W3 beats RTN W3 by ≥ 0.5%
    dense = dense_record("decoder")
    recs = [dense]
    # seed 2 reverses the order, the mean still holds
    for seed, (optq, rtn) in enumerate([(0.0, 0.1), (0.0, 0.1), (0.05, 0.0)]):
        recs.append(record("table5", "gptq", settings={"wbits": 3}, wbits=3, level=optq, seed=seed, dense_id=dense["id"]))
        recs.append(record("table5", "rtn", settings={"wbits": 3}, wbits=3, level=rtn, seed=seed, dense_id=dense["id"]))
    got = evaluate_claim(claim, recs)[0]
    assert got.verdict == HOLDS and got.seeds == "2/3"
    assert "holds in 2 of 3 seeds" in got.evidence and len(got.records) == 6
    # the mean reverses: contradicted, still 2 of 3 seeds for it
    recs[-2] = record("table5", "gptq", settings={"wbits": 3}, wbits=3, level=0.5, seed=2, dense_id=dense["id"])
    got = evaluate_claim(claim, recs)[0]
    assert got.verdict == CONTRADICTED and got.seeds == "2/3"


def test_a_runs_cost_is_its_least_over_its_seeds():
    """Seeds repeat the same work: one seed slowed by a busy machine does not make a cheap method dear."""
    claim = _claim("t5_cost_orders_of_magnitude")      # high-cost ≥ 10× the low-cost device-hours

    def low(r):
        return r["kind"] == "compressed" and next(iter(r["rows"].values()))["cost"] == "low"

    def slowed(r):
        return {**r, "timing": {"compress_s": r["timing"]["compress_s"] * 1e4}} if low(r) else r
    recs = records_for(claim, seeds=(0, 1))
    assert any(map(low, recs)) and evaluate_claim(claim, recs)[0].verdict == HOLDS
    busy = [slowed(r) if r["seed"] == 1 else r for r in recs]
    got = evaluate_claim(claim, busy)[0]
    assert got.verdict == HOLDS and "least cost over every seed" in got.evidence
    assert evaluate_claim(claim, [slowed(r) for r in recs])[0].verdict == CONTRADICTED   # every seed slow


def test_partial_records_count_only_when_asked_and_are_then_marked():
    claim = _claim("t7_fwsvd_beats_svd")
    recs = [r if r["kind"] == "dense" else {**r, "protocol": {**r["protocol"], "complete": False,
                                                               "partial": ["1000 of 5173 examples"]}}
            for r in records_for(claim)]
    left = evaluate_claim(claim, recs)[0]
    assert left.verdict == NOT_ENOUGH and "partial-protocol" in left.evidence and not left.records
    taken = evaluate_claim(claim, recs, include_partial=True)[0]
    assert taken.verdict == HOLDS and taken.partial == "1000 of 5173 examples"


def test_two_configurations_for_one_run_are_ambiguous_not_picked():
    claim = _claim("t5_optq_beats_rtn_3bit")
    recs = records_for(claim)
    other = record("table5", "gptq", settings={"wbits": 3, "group_size": 128}, wbits=3, dense_id=recs[0]["id"])
    got = evaluate_claim(claim, [*recs, other])[0]
    assert got.verdict == NOT_ENOUGH and "ambiguous" in got.evidence


def test_a_budget_claim_wants_runs_at_no_more_bits():
    claim = _claim("t5_owq_beats_optq_3bit")
    recs = [r if r["preset"] != "owq" else {**r, "compression": {**r["compression"], "bits_per_weight": 3.9}}
            for r in records_for(claim)]
    recs = [{**r, "id": record_id(r["identity"])} for r in recs]
    got = evaluate_claim(claim, recs)[0]
    assert got.verdict == NOT_ENOUGH and "equal budget" in got.evidence


def test_speedups_are_compared_on_one_device_only():
    claim = _claim("t3_structured_speedup_unstructured_not")
    dense = dense_record("decoder")
    recs = [dense, record("table3", "llm_pruner", kind="structured", speedup=(1.3, 1.2, 1.4), device="CPU-A",
                          dense_id=dense["id"]),
            record("table3", "wanda", kind="unstructured", speedup=(0.7, 0.6, 0.8), device="CPU-B",
                   dense_id=dense["id"])]
    got = evaluate_claim(claim, recs)[0]
    assert got.verdict == NOT_ENOUGH and "no device" in got.evidence


def test_each_model_is_its_own_finding():
    claim = _claim("t5_optq_beats_rtn_3bit")
    recs = records_for(claim)
    dense_b = dense_record("decoder", model="other")
    recs += [dense_b, record("table5", "gptq", settings={"wbits": 3}, wbits=3, level=1.0, model="other",
                             dense_id=dense_b["id"]),
             record("table5", "rtn", settings={"wbits": 3}, wbits=3, level=0.0, model="other", dense_id=dense_b["id"])]
    got = {f.model: f.verdict for f in evaluate_claim(claim, recs)}
    assert got == {MODEL: HOLDS, "other": CONTRADICTED}


# ---------------------------------------------------------------------------------------------
# the registry's checks
# ---------------------------------------------------------------------------------------------

BAD = {
    "kind": ("kind: beats\n    a: {preset: x}\n    b: {preset: y}", "unknown kind 'beats'"),
    "table": ("kind: better\n    a: {preset: x, table: table9}\n    b: {preset: y}", "unknown table 'table9'"),
    "selector": ("kind: better\n    a: {presetz: x}\n    b: {preset: y}", "unknown selector key"),
    "margin": ("kind: better\n    a: {preset: x}\n    b: {preset: y}\n    margin: {pct: 2}", "margin must be"),
    "key": ("kind: better\n    a: {preset: x}\n    b: {preset: y}\n    factor: 2", "unknown key"),
}


@pytest.mark.parametrize("what", BAD)
def test_a_bad_claim_is_one_line_naming_it(tmp_path, what):
    body, message = BAD[what]
    (tmp_path / "t.yaml").write_text(f"table: table5\nclaims:\n  - id: c1\n    source: Sec. 4\n    quote: q\n    {body}\n")
    with pytest.raises(ClaimError) as err:
        load_claims(folder=tmp_path)
    assert message in str(err.value) and "c1" in str(err.value) and "\n" not in str(err.value)


def test_unknown_tables_and_ids_are_refused():
    with pytest.raises(ClaimError, match="unknown table"):
        load_claims(["table9"])
    with pytest.raises(ClaimError, match="unknown claim id"):
        load_claims(ids=["no_such_claim"])


# ---------------------------------------------------------------------------------------------
# the script
# ---------------------------------------------------------------------------------------------

def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "findings.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _rows(folder: Path) -> list[dict]:
    with (folder / "tables" / "findings.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_script_on_a_folder_with_only_some_tables(tmp_path):
    """Decoder records only: decoder claims judged, encoder claims 'not enough runs'; every record id
    in the CSV is a file of the folder; the reports and cost plots are written."""
    runs = tmp_path / "res" / "runs"
    runs.mkdir(parents=True)
    recs = {r["id"]: r for c in CLAIMS if c.table in ("table3", "table5") for r in records_for(c)}
    for rid, r in recs.items():
        (runs / f"{rid}.json").write_text(json.dumps(r))
    done = _script(f"paths.results={tmp_path / 'res'}", "include=[]", f"out={tmp_path / 'out'}", "formats=[png]")
    assert done.returncode == 0, done.stderr
    rows = _rows(tmp_path / "out")
    assert list(rows[0])[:8] == ["id", "claim", "source", "model", "task", "verdict", "evidence", "records"]
    assert {r["id"] for r in rows} == {c.id for c in CLAIMS}
    for r in rows:
        table = next(c.table for c in CLAIMS if c.id == r["id"])
        if table in ("table2", "table4", "table6", "table7"):
            assert r["verdict"] == NOT_ENOUGH and r["model"] == "-"
        ids = [i for i in r["records"].split(";") if i]
        assert all(i in recs for i in ids), r["id"]
    assert (tmp_path / "out" / "plots" / "cost_table3.png").stat().st_size > 10_000
    md = (tmp_path / "out" / "tables" / "findings.md").read_text()
    assert "not a refutation" in md and md.count("\n- **") == len(rows)
    assert "\\begin{longtable}" in (tmp_path / "out" / "tables" / "findings.tex").read_text()


@pytest.mark.parametrize("args,message", [
    (["tables=[table9]"], "unknown table"),
    (["include=[results/no-such-set]"], "no runs/ folder"),
    (["ids=[no_such_claim]"], "unknown claim id"),
])
def test_script_bad_input_is_one_line_before_loading(args, message):
    done = _script(*args, "out=/nonexistent-never-written")
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_script_on_the_published_sets_names_only_records_that_exist(tmp_path):
    from tables.collect import collect
    ids = set(collect([ROOT / "results" / "tiny-llama-wt2", ROOT / "results" / "minilm-l6"]).records)
    done = _script("include_partial=true", f"out={tmp_path}", "plots=false")
    assert done.returncode == 0, done.stderr
    rows = _rows(tmp_path)
    named = {i for r in rows for i in r["records"].split(";") if i}
    assert named and named <= ids
    assert {r["verdict"] for r in rows} <= {HOLDS, CONTRADICTED, NOT_ENOUGH}
    # the MiniLM verdicts count partial records: marked
    assert all(r["partial"] for r in rows if r["model"] == "minilm-l6" and r["verdict"] != NOT_ENOUGH)
