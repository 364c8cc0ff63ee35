"""Check a claimed number: one survey row, every row, or a claim of your own (tables/verify.py).

    python scripts/verify.py table=5 row=OPTQ             # the row's spec, its record (reused or run), a verdict
    python scripts/verify.py table=all dry_run=true       # all 74 rows: a plan (GPU memory, download, GPU-hours)
    python scripts/verify.py claim="model=opt_125m method=gptq calib=c4 ppl=31.12"

Exit status: 0 reproduced, 1 not reproduced, 2 cannot run here (or bad input), 3 partial; of
several verdicts 1 if any is not reproduced, else 2 if any cannot run, else 3 if any is partial;
a dry run 0.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from tables.build import TABLES  # noqa: E402
from tables.estimate import FORMULA, Estimate, verify_conf  # noqa: E402
from tables.rows import find, load  # noqa: E402
from tables.verify import METRICS, Checker, Verdict, exit_status  # noqa: E402

BAD_INPUT = 2   # bad input cannot run here either: never 1, which a gate reads as "not reproduced"


def usage_error(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(BAD_INPUT)


def _split_top(text: str) -> list[str]:
    """`text` split at the commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [*parts, cur] if cur or parts else []


def _quoted(value: str) -> str:
    return value if value[:1] in "'\"" else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def normalise(argv: list[str]) -> list[str]:
    """The documented spellings that Hydra's grammar refuses, made into ones it takes: a claim
    as the shell leaves it (claim="model=... ppl=1" arrives as claim=model=... ppl=1) is quoted,
    and so is each `key=value` of overrides=[device=cuda,...]; --dry-run is dry_run=true."""
    out = []
    for arg in argv:
        if arg == "--dry-run":
            arg = "dry_run=true"
        elif arg.startswith("claim=") and arg[len("claim="):]:
            arg = "claim=" + _quoted(arg[len("claim="):])
        elif arg.startswith("overrides=[") and arg.endswith("]"):
            items = _split_top(arg[len("overrides=["):-1])
            arg = "overrides=[" + ",".join(_quoted(i) if "=" in i else i for i in items) + "]"
        out.append(arg)
    return out


def check_parses(args: list[str]) -> None:
    """One line and exit status 2 for an argument Hydra cannot read or conf/verify.yaml does not
    have, before anything loads."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException
    from methods.core.suggest import did_you_mean
    parser, known = OverridesParser.create(), set(verify_conf())
    for arg in args:
        try:
            (override,) = parser.parse_overrides([arg])
        except OverrideParseException as err:
            usage_error(f"cannot read '{arg}': {str(err).splitlines()[0]}")
        top = override.key_or_group.split(".")[0].split("/")[0]
        if top in METRICS:
            usage_error(f"'{arg}' is a claim's figure: quote the claim, claim=\"<overrides> {arg}\"")
        if top not in known and top != "hydra" and not override.is_add():
            usage_error(f"no setting '{top}' in conf/verify.yaml{did_you_mean(top, known)}")


def overrides_of(argv: list[str]) -> list[str]:
    """The overrides among the arguments: not Hydra's flags (-m, --cfg job, --config-name x, ...)
    nor a flag's value."""
    out, after_flag = [], False
    for arg in argv:
        if arg.startswith("-"):
            after_flag = True
        elif after_flag and "=" not in arg:
            after_flag = False
        else:
            out.append(arg)
            after_flag = False
    return out


def table_key(value: object) -> str:
    key = str(value)
    key = key if key.startswith("table") or key == "all" else f"table{key}"
    if key != "all" and key not in TABLES:
        usage_error(f"unknown table '{value}': 2..7 or all")
    return key


def verdicts_of(cfg: DictConfig) -> list[Verdict]:
    specs = []
    if not cfg.claim:
        if cfg.table is None:
            usage_error("give table=<2..7|all> [row=<id>] or claim=\"<overrides> ppl=<value>\"")
        key = table_key(cfg.table)
        specs = load() if key == "all" else find(key, str(cfg.row)) if cfg.row else load(key)
        if not specs:
            usage_error(f"no row '{cfg.row}' in {key}; its rows: {', '.join(s.id for s in load(key))}")
    checker = Checker(cfg.paths.results, list(cfg.include), list(cfg.overrides), bool(cfg.dry_run),
                      bool(cfg.include_partial))
    if cfg.claim:
        tol = OmegaConf.to_container(cfg.tolerance) if cfg.tolerance else None
        try:
            return [checker.check_claim(str(cfg.claim), tol)]
        except ValueError as err:
            usage_error(str(err))
    return [checker.check_row(s) for s in specs]


def report(verdicts: list[Verdict], dry_run: bool) -> None:
    """Every verdict; in a dry run (and for a row that cannot run here) its runs and needs, then
    the totals of each table and of all (work shared between rows, downloads, counted once)."""
    device = verify_conf()["device"]
    totals: dict[str, Estimate] = {}
    for v in verdicts:
        print(v.line())
        if dry_run or v.status == "cannot run here":
            if v.protocol:
                print("    protocol:", v.protocol, f"(tolerance {next(iter(v.tolerance.values()), {})})")
            for runs in v.runs:
                print("    run:", " ".join(runs))
            if v.estimate is not None:
                print("   ", v.estimate.describe(device))
                table = v.subject.split()[0]
                totals[table] = totals.get(table, Estimate()).add(v.estimate)
        for rid in v.records:
            print(f"    record: {rid}")
    if dry_run and totals:
        for table, est in totals.items():
            print(f"{table} total: {est.describe(device, total=True)}")
        if len(totals) > 1:
            everything = Estimate()
            for est in totals.values():
                everything = everything.add(est)
            print(f"all total: {everything.describe(device, total=True)}")
        print(f"estimate: {FORMULA}; P_bf16 {device['bf16_tflops']} TFLOP/s, P_fp32 {device['fp32_tflops']} TFLOP/s, "
              f"u {device['utilisation']} ({device['name']}, conf/verify.yaml)")
    counts = {s: sum(v.status == s for v in verdicts) for s in dict.fromkeys(v.status for v in verdicts)}
    print(f"{len(verdicts)} checked: " + ", ".join(f"{n} {s}" for s, n in counts.items()))


def verify(cfg: DictConfig) -> int:
    """The verdicts printed; the exit status."""
    verdicts = verdicts_of(cfg)
    report(verdicts, bool(cfg.dry_run))
    return exit_status(verdicts, bool(cfg.dry_run))


@hydra.main(config_path="../conf", config_name="verify", version_base="1.3")
def main(cfg: DictConfig) -> None:
    sys.exit(verify(cfg))


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *normalise(sys.argv[1:])]
    check_parses(overrides_of(sys.argv[1:]))
    main()
