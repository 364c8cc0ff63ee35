"""Regenerate the figures beside the tables (PNG and PDF) from the same records and kernel
benchmark files as scripts/tables.py: quality against compression rate, and against measured
speedup, per table, one panel per model, one line per method.

    python scripts/plots.py [tables=[table3]] [paths.results=results/tiny-llama-wt2]
Writes <paths.results>/plots/<table>_{rate,speedup}.{png,pdf}.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tables.build import TABLES, built_tables  # noqa: E402
from tables.plots import plot_table  # noqa: E402


@hydra.main(config_path="../conf", config_name="plots", version_base="1.3")
def main(cfg: DictConfig) -> None:
    results = Path(cfg.paths.results)
    try:
        tables = built_tables(cfg.tables, results, cfg.get("include", []), cfg.include_partial)
    except ValueError as err:
        sys.exit(f"error: {err}")
    for key, df in tables.items():
        for fig in plot_table(TABLES[key], df, results / "plots", list(cfg.formats)):
            print(f"{key}: {', '.join(str(p) for p in fig.paths)}  ({sum(map(len, fig.panels.values()))} lines "
                  f"in {len(fig.panels)} panels)")


if __name__ == "__main__":
    main()
