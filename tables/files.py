"""A built table's files: its CSV, its one-column LaTeX and its two-column-spanning variant."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from tables.build import TableSpec
from tables.latex import to_latex


def write(spec: TableSpec, df: pd.DataFrame, out_dir: Path) -> tuple[Path, Path, Path]:
    """<key>.csv, <key>.tex (one column of an article) and <key>_wide.tex (`table*`) under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, tex, wide = out_dir / f"{spec.key}.csv", out_dir / f"{spec.key}.tex", out_dir / f"{spec.key}_wide.tex"
    df.to_csv(csv, index=False)
    tex.write_text(to_latex(spec, df))
    wide.write_text(to_latex(spec, df, wide=True))
    return csv, tex, wide
