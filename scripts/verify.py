"""Check a claimed number: one survey row, every row, or a claim of your own (tables/verify.py).

    python scripts/verify.py table=5 row=OPTQ             # the row's spec, its record (reused or run), a verdict
    python scripts/verify.py table=all --dry-run          # all 74 rows: spec, status, what a run would take
    python scripts/verify.py claim="model=opt_125m method=gptq method.wbits=4 ppl=31.12"
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from tables.build import TABLES  # noqa: E402
from tables.rows import find, load  # noqa: E402
from tables.verify import Checker  # noqa: E402


def table_key(value: object) -> str:
    key = str(value)
    key = key if key.startswith("table") or key == "all" else f"table{key}"
    if key != "all" and key not in TABLES:
        sys.exit(f"error: unknown table '{value}': 2..7 or all")
    return key


@hydra.main(config_path="../conf", config_name="verify", version_base="1.3")
def main(cfg: DictConfig) -> None:
    checker = Checker(cfg.paths.results, list(cfg.include), list(cfg.overrides), bool(cfg.dry_run),
                      bool(cfg.include_partial))
    tol = OmegaConf.to_container(cfg.tolerance) if cfg.tolerance else None
    if cfg.claim:
        verdicts = [checker.check_claim(cfg.claim, tol)]
    elif cfg.table is None:
        sys.exit("error: give table=<2..7|all> [row=<id>] or claim=\"<overrides> ppl=<value>\"")
    else:
        key = table_key(cfg.table)
        if key == "all":
            specs = load()
        elif cfg.row:
            specs = find(key, str(cfg.row))
            if not specs:
                ids = ", ".join(s.id for s in load(key))
                sys.exit(f"error: no row '{cfg.row}' in {key}; its rows: {ids}")
        else:
            specs = load(key)
        verdicts = [checker.check_row(s) for s in specs]
    for v in verdicts:
        print(v.line())
        if cfg.dry_run or v.status == "cannot run here":
            if v.protocol:
                print("    protocol:", v.protocol, f"(tolerance {next(iter(v.tolerance.values()), {})})")
            for runs in v.runs:
                print("    run:", " ".join(runs))
            if v.estimate:
                print("    needs:", ", ".join(f"{k} {val}" for k, val in v.estimate.items()))
        for rid in v.records:
            print(f"    record: {rid}")
    counts = {s: sum(v.status == s for v in verdicts) for s in dict.fromkeys(v.status for v in verdicts)}
    print(f"{len(verdicts)} checked: " + ", ".join(f"{n} {s}" for s, n in counts.items()))


if __name__ == "__main__":
    sys.argv = [("dry_run=true" if a == "--dry-run" else a) for a in sys.argv]   # the flag spelling works too
    main()
