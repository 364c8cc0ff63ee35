"""Check the survey's conclusions on the run records: every claim of conf/claims/<table>.yaml,
evaluated per model and task on the records under `paths.results` and the `include`d sets.

    python scripts/findings.py                                   # the published sets
    python scripts/findings.py paths.results=results/tiny-llama-wt2 include=[] out=/tmp/f
    python scripts/findings.py include_partial=true tables=[table2]   # MiniLM: partial records, marked
    python scripts/findings.py list=true

Writes <out>/tables/findings.csv (id, claim, source, model, task, verdict, evidence, records, ...),
findings.md and findings.tex, and <out>/plots/cost_<table>.{png,pdf} (docs/findings.md)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tables.build import gather  # noqa: E402
from tables.collect import resolve_set, set_name  # noqa: E402
from tables.claims import CAVEAT, ClaimError, load_claims  # noqa: E402
from tables.findings import evaluate, write_csv, write_latex, write_markdown  # noqa: E402


def check_folders(results: str, include: list[str]) -> list[Path]:
    """The record sets to read, each checked before anything loads: a missing one is an error."""
    out = []
    res = resolve_set(results)
    if not res.is_dir():
        raise ClaimError(f"results folder {results} does not exist")
    if (res / "runs").is_dir():
        out.append(res)
    for inc in include:
        p = resolve_set(inc)
        if not (p / "runs").is_dir():
            raise ClaimError(f"record set {inc} has no runs/ folder ({p})")
        out.append(p)
    if not out:
        raise ClaimError(f"no records: {res / 'runs'} does not exist and include is empty")
    return out


def run(cfg: DictConfig) -> int:
    try:
        claims = load_claims(list(cfg.tables), list(cfg.ids))
        if cfg.get("list"):
            for c in claims:
                print(f"{c.id}  [{c.table}, {c.kind.name}]  {c.source}")
            return 0
        folders = check_folders(str(cfg.paths.results), list(cfg.include))
    except ClaimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    records = gather(folders[0], folders[1:])
    findings = evaluate(claims, records, bool(cfg.include_partial))
    out = Path(cfg.out) if cfg.get("out") else resolve_set(cfg.paths.results)
    sources = sorted({set_name(f) for f in folders})
    csv = write_csv(findings, out / "tables" / "findings.csv")
    md = write_markdown(findings, out / "tables" / "findings.md", sources)
    tex = write_latex(findings, out / "tables" / "findings.tex")
    print(f"{len(findings)} findings of {len(claims)} claims -> {csv}, {md}, {tex}")
    print(CAVEAT)
    if cfg.plots:
        from tables.cost_plot import plot_tables
        for key, paths in plot_tables(list(cfg.tables), records, out / "plots", list(cfg.formats),
                                      bool(cfg.include_partial)).items():
            if paths:
                print(f"{key}: {', '.join(str(p) for p in paths)}")
    if cfg.print:
        for f in findings:
            print(f"{f.claim.id:48s} {f.model:16s} {f.verdict:16s}{'*' if f.partial else ' '} {f.evidence}")
    return 0


@hydra.main(config_path="../conf", config_name="findings", version_base="1.3")
def main(cfg: DictConfig) -> None:
    code = run(cfg)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
