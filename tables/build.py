"""Survey tables from run records: the reported rows (tables/reported/*.csv, transcribed from the
survey) beside the reproduced rows, with Δ where model, method and rate match, and the
provenance of every reproduced number. Writes CSV and booktabs LaTeX.

A reproduced row shows only what its record holds: its row in the table (label, reference,
granularity, cost), its preset, its protocol and its own measured speedup. Nothing is rebuilt
from today's code (methods/ and kernels/ are never imported here). A record that ran less than
its protocol (`protocol.complete` false) enters a table only with `include_partial`, marked."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import pandas as pd

if TYPE_CHECKING:
    from tables.collect import Collection

from tables.speedups import speedup_of

REPORTED_DIR = Path(__file__).resolve().parent / "reported"
ROWS_DIR = Path(__file__).resolve().parent.parent / "conf" / "rows"


# the survey's task columns of its encoder tables (2, 4, 6, 7), over which Avg runs: (key, LaTeX header).
# A record's own column (its task's, `protocol.column`) goes where its key is; another task's is added.
SURVEY_TASKS = (("mnli", "MNLI"), ("qqp", "QQP"), ("squad", "SQuAD"))
# the records' compression kinds (methods.core.base.Kind values; tests/test_tables_from_records.py ties them)
PRUNING = frozenset({"unstructured", "n:m", "structured"})
QUANTIZATION = frozenset({"quantized"})
DISTILLATION = frozenset({"distilled"})
LOW_RANK = frozenset({"low_rank", "adaptor"})
# what a record must carry for a table to show it (eval/pipeline.py writes them)
RECORD_FIELDS = ("rows", "preset", "protocol")
SPEEDUP_COLUMNS = ["speedup_q1", "speedup_q3", "speedup_claim", "speedup_device", "speedup_basis"]
TRAINING_COLUMNS = ["train_steps", "train_samples", "train_minutes", "device_hours", "train_gflops",
                    "train_peak_fraction"]


@dataclass(frozen=True)
class TableSpec:
    """A survey table: which records it takes (the task's role and the compression kinds), and
    how its rows look. A method's label, reference and granularity come from the method itself."""

    key: str
    reported: str
    caption: str
    role: str                    # "decoder" | "encoder"
    kinds: frozenset[str]
    kind_column: str = "granularity"  # the 4th LaTeX column: granularity (pruning) or uniform (quant)
    # the method-describing LaTeX columns after Method and Ref. (header, key)
    describe: tuple[tuple[str, str], ...] = ()
    presets: bool = False        # name the conf/method preset of every row, reported ones included

    @property
    def encoder(self) -> bool:
        return self.role == "encoder"


TABLES = {
    "table2": TableSpec("table2", "table2_pruning_encoder.csv",
                        "Pruning of encoder-only models: accuracy / F1 difference (%p) to the fine-tuned model.",
                        "encoder", PRUNING, presets=True),
    "table3": TableSpec("table3", "table3_pruning_decoder.csv",
                        "Pruning of decoder-only models: WikiText-2 perplexity (reported vs reproduced).",
                        "decoder", PRUNING, presets=True),
    "table4": TableSpec("table4", "table4_quantization_encoder.csv",
                        "Quantization of encoder-only models: accuracy / F1 difference (%p) to the fine-tuned model.",
                        "encoder", QUANTIZATION, kind_column="uniform", presets=True),
    "table5": TableSpec("table5", "table5_quantization_decoder.csv",
                        "Quantization of decoder-only models: WikiText-2 perplexity (reported vs reproduced).",
                        "decoder", QUANTIZATION, kind_column="uniform", presets=True),
    "table6": TableSpec("table6", "table6_distillation_encoder.csv",
                        "Knowledge distillation into a student with fewer layers: accuracy / F1 difference (%p) "
                        "to the fine-tuned teacher; rate = fraction of the teacher's layers removed.",
                        "encoder", DISTILLATION, kind_column="distill_source",
                        describe=(("Source", "distill_source"), ("Matching", "layer_matching")), presets=True),
    "table7": TableSpec("table7", "table7_lowrank_encoder.csv",
                        "Low-rank approximation and adaptors: accuracy / F1 difference (%p) to the fine-tuned model; "
                        "rate = parameters removed from the factorised matrices (P) or adaptor size / model size (A).",
                        "encoder", LOW_RANK, kind_column="target", describe=(("Target", "target"), ("PLM", "plm")),
                        presets=True),
}


@dataclass(frozen=True)
class RowMeta:
    """A record's row in one table, as the record holds it (eval/pipeline.py `rows`)."""

    label: str
    ref: str = ""
    granularity: str | None = None
    uniform: str = ""
    cost: str = "low"
    columns: dict[str, Any] = field(default_factory=dict)


def row_meta(record: dict, table: str) -> RowMeta:
    """The record's own row metadata for `table`; a method that declares none there appears under
    its registered name (the record's method identity)."""
    row = (record.get("rows") or {}).get(table)
    return RowMeta(**row) if row else RowMeta(record["identity"]["method"]["name"])


def missing_fields(record: dict) -> list[str]:
    missing = [f for f in RECORD_FIELDS if f not in record]
    if "protocol" in record and ("column" not in record["protocol"]
                                 or record.get("role") == "encoder" and not record["protocol"]["column"]):
        missing.append("protocol.column")
    return missing


def is_partial(record: dict) -> bool:
    return not record["protocol"]["complete"]


def belongs(spec: TableSpec, record: dict) -> bool:
    """A compressed record of this table's role (its task's) and compression kind, carrying what
    the table shows."""
    if record.get("kind") != "compressed" or missing_fields(record):
        return False
    return record.get("role") == spec.role and record["compression"].get("kind") in spec.kinds


def gather(results: str | Path, include: Iterable[str | Path] = ()) -> list[dict]:
    """The valid records under `results`/runs and every included record set (named relative to the
    project or the current directory), each identity once. Corrupt files, missing sets and
    conflicting duplicates are reported on stderr with their paths and left out (tables/collect.py)."""
    return list(_collected(results, include).records.values())


def _collected(results: str | Path, include: Iterable[str | Path]) -> "Collection":
    from tables.collect import collect
    found = collect([results, *include], must_exist=include)
    for line in found.report():
        print(f"warning: {line}", file=sys.stderr)
    return found


def record_sets(paths: dict[str, Path]) -> dict[str, str]:
    """Each record's set: the folder holding its runs/ (tables.collect.set_name)."""
    from tables.collect import set_name
    return {rid: set_name(Path(path).parent.parent) for rid, path in paths.items()}


def built_tables(keys: Iterable[str], results: str | Path, include: Iterable[str | Path] = (),
                 include_partial: bool = False, warn: bool = False) -> dict[str, pd.DataFrame]:
    """The tables `keys` (checked) from the records under `results` and the included sets; partial
    records only with `include_partial` (marked)."""
    keys = list(keys)
    unknown = [t for t in keys if t not in TABLES]
    if unknown:
        raise ValueError(f"unknown table(s) {unknown}; available: {', '.join(TABLES)}")
    found = _collected(results, include)
    records, sets = list(found.records.values()), record_sets(found.paths)
    if warn:
        for rid, why in unplaced(records):
            print(f"warning: record {rid} is in no table: {why}", file=sys.stderr)
        if not include_partial:
            n = sum(1 for r in records if r.get("kind") == "compressed" and not missing_fields(r) and is_partial(r))
            if n:
                print(f"warning: {n} partial-protocol record(s) left out of the tables (include_partial=true "
                      f"shows them, marked)", file=sys.stderr)
    return {key: build_table(TABLES[key], records, include_partial, sets) for key in keys}


def unplaced(records: Iterable[dict]) -> list[tuple[str, str]]:
    """(record id, why) for every compressed record that no table takes."""
    out = []
    for r in records:
        if r.get("kind") != "compressed" or any(belongs(spec, r) for spec in TABLES.values()):
            continue
        if missing_fields(r):
            out.append((r["id"], f"record lacks {', '.join(missing_fields(r))} (made before records carried "
                                 f"their table rows): upgrade it with `scripts/merge.py upgrade=true`, or rerun it"))
        elif "role" not in r or "kind" not in r.get("compression", {}):
            out.append((r["id"], "record predates the typed compression result (schema 2); rerun it"))
        else:
            out.append((r["id"], f"no table takes {r['role']} records of kind '{r['compression']['kind']}'"))
    return out


def _ppl(record: dict | None, ds: str) -> float | None:
    if not record or ds not in record.get("metrics", {}):
        return None
    return record["metrics"][ds]["ppl"]


def _bits_label(comp: dict) -> str:
    if "wbits" not in comp:
        return ""
    return f"W{comp['wbits']}" + (f"A{comp['abits']}" if comp.get("abits") else "")


def _speedup(record: dict) -> dict[str, Any]:
    """The record's own measured Speedup cell: median, quartiles, device and basis (tables/speedups.py)."""
    s = speedup_of(record)
    if s is None:
        return {}
    return {"speedup": round(s.median, 2), "speedup_q1": round(s.q1, 3), "speedup_q3": round(s.q3, 3),
            "speedup_claim": s.claim,
            "speedup_device": s.device, "speedup_basis": s.basis}


def _partial(record: dict) -> str:
    """The settings where the record ran less than its protocol ('' for a whole-protocol run)."""
    return "; ".join(record["protocol"]["partial"])


def _granularity(record: dict, meta: RowMeta) -> str:
    return meta.granularity or record["compression"]["granularity"]


def rate_counted_as(record: dict) -> str:
    """How the record's rate is counted, in words, from what its compression result says."""
    comp = record["compression"]
    basis, kind = comp.get("rate_basis", "memory"), comp["kind"]
    if kind == "quantized":
        base = comp.get("rate_base_bits", 16)
        if "overhead_comp_rate" in comp:
            return f"1 − nominal bits / {base} bits (the paper's count; with statistics: CSV overhead_comp_rate)"
        return f"1 − stored bits / {base} bits, over the quantized linears"
    if kind in ("unstructured", "n:m"):
        return "zero fraction of the compressed linears"
    return {"flops": "fraction of the FLOPs removed", "layers": "fraction of the teacher's layers removed",
            "linears": "parameters removed from the factorised linears",
            "adaptor": "adaptor parameters / model parameters"}.get(basis, "fraction of the parameters removed")


def _thousands(n: int) -> str:
    return f"{n / 1000:g}k" if n >= 1000 else str(n)


def task_column(record: dict) -> dict[str, str]:
    """The column an encoder record's score stands in: its task's survey column where it ran that
    task itself; a variant of it (squad_dev_split for squad) gets its own column, named for the
    variant and, where it scored a part of its evaluation set, for the number scored."""
    col, task = record["protocol"]["column"], record["task"]
    if task == col["key"]:
        return col
    words = task[len(col["key"]) + 1:] if task.startswith(col["key"] + "_") else task
    detail = [words.replace("_", " ")]
    if is_partial(record):
        sizes = [m.get("examples") for m in (record["metrics"].get(task) or {}).values() if isinstance(m, dict)]
        detail += [_thousands(n) for n in sizes if n]
    return {**col, "key": task, "header": f"{col['header']} ({', '.join(detail)})", "slot": col["key"]}


def baseline_score(record: dict, by_id: dict[str, dict]) -> float:
    """The fine-tuned model's score on the record's task: its dense record's, else the record's own
    score less its Δ."""
    dense = by_id.get(record.get("dense_id", ""))
    if dense is not None and dense.get("headline") is not None:
        return float(dense["headline"])
    return float(record["headline"] - record["delta"])


def _decoder_row(spec: TableSpec, record: dict, by_id: dict[str, dict], sets: dict[str, str]) -> dict:
    meta = row_meta(record, spec.key)
    dense = by_id.get(record.get("dense_id", ""))
    cfg = record["config"]
    calib = record["identity"].get("calib") and {**record["identity"]["calib"], **(record["config"].get("calib") or {})}
    notes = []
    if calib:
        notes.append(f"calib {calib['source']}{':' + str(calib.get('path')) if calib.get('path') else ''}"
                     f" x{calib['nsamples']}")
    comp = record["compression"]
    return {
        "source": "reproduced", "method": meta.label, "ref": meta.ref, "preset": record["preset"],
        "plm": cfg["model"]["name"],
        "granularity": _granularity(record, meta), "uniform": meta.uniform, "cost": meta.cost,
        "bits": _bits_label(comp), "group_size": comp.get("group_size"),
        "bits_per_weight": comp.get("bits_per_weight"),
        "comp_rate": round(comp["comp_rate"], 4), "model_comp_rate": round(comp["model_comp_rate"], 4),
        "rate_counted_as": rate_counted_as(record),
        "ppl_plm": _ppl(dense, "wikitext2"), "ppl_compressed": _ppl(record, "wikitext2"),
        "c4_ppl_plm": _ppl(dense, "c4"), "c4_ppl_compressed": _ppl(record, "c4"),
        **_speedup(record), "seqlen": record["seqlen"], "hardware": record["hardware"]["name"],
        "protocol": record["protocol"]["name"], "partial": _partial(record),
        "record": record["id"], "record_set": sets.get(record["id"], ""), "seed": record.get("seed", 0),
        "flags": ";".join(record.get("flags", [])), "note": "; ".join(notes),
        **_training(record), **meta.columns,
    }


def _encoder_rows(spec: TableSpec, records: list[dict], by_id: dict[str, dict], sets: dict[str, str]) -> list[dict]:
    """One row per (model, method config, recipe): the Δ (%p, compressed − fine-tuned baseline)
    of each task in its column, Avg over the survey's tasks present (a variant's column stays out
    of it), and the baseline each Δ is taken against."""
    rows: dict[str, dict] = {}
    for r in records:
        task = r["task"]
        meta = row_meta(r, spec.key)
        key = json.dumps({k: v for k, v in r["identity"].items() if k != "task"}, sort_keys=True, default=str)
        comp = r["compression"]
        row = rows.setdefault(key, {
            "source": "reproduced", "method": meta.label, "ref": meta.ref, "preset": r["preset"],
            "plm": r["config"]["model"]["name"],
            "granularity": _granularity(r, meta), "uniform": meta.uniform, "cost": meta.cost,
            "comp_rate": round(comp["comp_rate"], 4), "rate_basis": comp["rate_basis"],
            "rate_counted_as": rate_counted_as(r), **_speedup(r),
            "hardware": r["hardware"]["name"], "seed": r.get("seed", 0),
            "protocol": [], "partial": [], "record": [], "record_set": [],
            "baseline": [], "note": [], "flags": "", **_training(r), **meta.columns})
        for item in comp.get("not_run") or []:
            row["note"].append(f"not run: {item}")
        column = task_column(r)
        row[column["key"]] = round(r["delta"], 2)
        row["baseline"].append(f"{column['header']} {column['metric']} {baseline_score(r, by_id):.2f}")
        row["record"].append(r["id"])
        row["record_set"].append(sets.get(r["id"], ""))
        if column["note"]:
            row["note"].append(column["note"])
        row["protocol"].append(r["protocol"]["name"])
        row["partial"] += [f"{task}: {why}" for why in r["protocol"]["partial"]]
    out = []
    for row in rows.values():
        deltas = [row[c] for c, _ in SURVEY_TASKS if row.get(c) is not None]
        row["avg"] = round(sum(deltas) / len(deltas), 2) if deltas else None
        row["record"] = ";".join(row["record"])
        row["record_set"] = ";".join(dict.fromkeys(row["record_set"]))
        row["baseline"] = "; ".join(row["baseline"])
        row["note"] = "; ".join(dict.fromkeys(row["note"]))
        row["protocol"] = "; ".join(dict.fromkeys(row["protocol"]))
        row["partial"] = "; ".join(dict.fromkeys(row["partial"]))
        out.append(row)
    return out


def task_headers(records: Iterable[dict]) -> dict[str, str]:
    """The task columns of encoder records, {key: header}, in the order the records name them."""
    return {c["key"]: c["header"] for r in records if r["protocol"]["column"] and (c := task_column(r))}


def task_slots(records: Iterable[dict]) -> dict[str, str]:
    """{variant column: the survey column it is a variant of} (squad_dev_split: squad)."""
    return {c["key"]: c["slot"] for r in records if r["protocol"]["column"] and "slot" in (c := task_column(r))}


def _training(record: dict) -> dict[str, Any]:
    """The training cost of a trained run: steps, samples, CPU/GPU minutes, device-hours, and the
    achieved fraction of the device's matmul peak."""
    t = record.get("training")
    if not t:
        return {}
    gflops = t["flops"] / t["wall_s"] / 1e9 if t.get("flops") and t["wall_s"] else None
    return {"train_steps": t["steps"], "train_samples": t["samples"], "train_minutes": round(t["wall_s"] / 60, 1),
            "device_hours": round(t["device_hours"], 4), "train_gflops": round(gflops, 1) if gflops else None,
            "train_peak_fraction": round(t["peak_fraction"], 3) if t.get("peak_fraction") else None}


def row_id(method: str, plm: str, rate: float | None) -> str:
    return f"{method}@{plm}@{'-' if rate is None or pd.isna(rate) else f'{float(rate):g}'}"


def reported_ids(df: pd.DataFrame) -> list[str]:
    """The row ids of a table's reported rows, in order (a repeated id gets '#2', '#3', ...)."""
    plm = df["plm"] if "plm" in df.columns else pd.Series("bert-base", index=df.index)
    ids, seen = [], {}
    for m, p, r in zip(df["method"], plm, df["comp_rate"]):
        base = row_id(m, p, r)
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return ids


def row_presets(table: str) -> dict[str, str]:
    """The preset that runs each reported row, by row id (conf/rows/<table>.yaml, the row registry)."""
    from omegaconf import OmegaConf
    path = ROWS_DIR / f"{table}.yaml"
    if not path.is_file():
        return {}
    doc = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return {row["id"]: row.get("preset", "not implemented") for row in doc["rows"]}


def reported(spec: TableSpec) -> pd.DataFrame:
    df = pd.read_csv(REPORTED_DIR / spec.reported, dtype={"ref": str})
    df = df.rename(columns={"source": "distill_source"})  # Table 6's distillation source (L, H, A, T)
    df.insert(0, "source", "reported")
    if spec.presets:
        by_id = row_presets(spec.key)
        df.insert(2, "preset", [by_id.get(i, "not implemented") for i in reported_ids(df)])
    return df


def _own_delta(row: dict) -> float | None:
    """Compressed minus its own dense perplexity (a flagged or partial run's: none)."""
    if row["flags"] or row["partial"] or row["ppl_compressed"] is None or row["ppl_plm"] is None:
        return None
    return float(row["ppl_compressed"] - row["ppl_plm"])


def _vs_reported(row: dict, rep: pd.DataFrame, kind_column: str) -> float | None:
    """Reproduced minus reported perplexity where method, model, granularity (or uniformity)
    and rate match."""
    if row["flags"] or row["partial"] or row["ppl_compressed"] is None:
        return None
    same = rep[(rep["method"] == row["method"]) & (rep["plm"] == row["plm"])
               & (rep[kind_column] == row[kind_column])
               & ((rep["comp_rate"] - row["comp_rate"]).abs() < 5e-3)]
    if same.empty:
        return None
    return float(row["ppl_compressed"] - same.iloc[0]["ppl_compressed"])


def build_table(spec: TableSpec, records: Iterable[dict], include_partial: bool = False,
                sets: dict[str, str] | None = None) -> pd.DataFrame:
    """The reported rows of `spec` followed by one reproduced row per record it takes (partial-
    protocol records only with `include_partial`, their shortfalls in the `partial` column);
    `sets`: the record set each record was read from (`record_set`)."""
    records, sets = list(records), sets or {}
    by_id = {r["id"]: r for r in records}
    mine = [r for r in records if belongs(spec, r) and (include_partial or not is_partial(r))]
    rep = reported(spec)
    provenance = ["protocol", "partial", "hardware", "seed", "record", "record_set", "flags"]
    if spec.encoder:
        rows = _encoder_rows(spec, mine, by_id, sets)
        headers = task_headers(mine)
        extra = [c for c in ("preset", "plm") if c not in rep.columns]
        extra += [c for c in ("speedup",) if c not in rep.columns] + SPEEDUP_COLUMNS
        trained = spec.key in ("table6", "table7") or any(r.get("training") for r in mine)
        extra += ["rate_counted_as", "baseline"] + (TRAINING_COLUMNS if trained else []) + provenance
        columns = list(rep.columns)
        new = [c for c in headers if c not in columns]       # a task the reported table has no column for
        at = columns.index("avg") if "avg" in columns else len(columns)
        columns[at:at] = new
        repro = pd.DataFrame(rows, columns=columns + extra)
        if repro.empty:
            return rep
        repro = repro.sort_values(["plm", "method", "comp_rate", "record"], kind="stable")
        out = pd.concat([rep, repro.astype(object)], ignore_index=True)[columns + extra]
        out.attrs["task_headers"] = {key: header for key, header in headers.items() if key in new}
        out.attrs["task_slots"] = {key: slot for key, slot in task_slots(mine).items() if key in new}
        return out
    rep = rep.assign(delta_ppl=pd.to_numeric(rep["ppl_compressed"], errors="coerce")
                     - pd.to_numeric(rep["ppl_plm"], errors="coerce"))
    rows = [_decoder_row(spec, r, by_id, sets) for r in mine]
    for row in rows:
        row["delta_ppl"] = _own_delta(row)
        row["vs_reported"] = _vs_reported(row, rep, spec.kind_column)
    quant = ["bits", "group_size", "bits_per_weight"] if spec.kind_column == "uniform" else []
    extra = [c for c in ("preset",) if c not in rep.columns]
    extra += ["vs_reported", *SPEEDUP_COLUMNS, "model_comp_rate", "rate_counted_as", *quant,
              "c4_ppl_plm", "c4_ppl_compressed", "seqlen", *provenance]
    if any(r.get("training") for r in mine):
        extra += TRAINING_COLUMNS
    repro = pd.DataFrame(rows, columns=list(rep.columns) + extra)
    if not repro.empty:
        repro = repro.sort_values(["plm", spec.kind_column, "comp_rate", "method", "record"], kind="stable")
    return pd.concat([rep, repro.astype(object)], ignore_index=True) if not repro.empty else rep


def added_task_columns(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(key, header) of each task column an encoder table added after the survey's three (they
    stand between SQuAD and Avg, so a table read back from its CSV still has them); the header
    is the task's own where the table was built in this process (`attrs`), else the key."""
    columns = list(df.columns)
    if SURVEY_TASKS[-1][0] not in columns:
        return []
    last = columns.index(SURVEY_TASKS[-1][0])
    end = columns.index("avg") if "avg" in columns else last + 1
    headers = df.attrs.get("task_headers", {})
    return [(key, headers.get(key, key)) for key in columns[last + 1:end]]
