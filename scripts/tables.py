"""Regenerate the survey tables (CSV + LaTeX) from the run records under results/runs/ and the
published record sets named in conf/tables.yaml (`include`)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tables.build import TABLES, built_tables  # noqa: E402
from tables.files import write  # noqa: E402


def render(tex: Path) -> Path:
    """The one-column table typeset in an article and saved as <key>.png beside it."""
    import tempfile
    from tables.typeset import to_png, typeset
    with tempfile.TemporaryDirectory() as tmp:
        done = typeset(tex, Path(tmp))
        if done.overfull_pt:
            print(f"warning: {tex} is wider than its column by {max(done.overfull_pt):.1f} pt", file=sys.stderr)
        return to_png(done.pdf, tex.with_suffix(".png"))


@hydra.main(config_path="../conf", config_name="tables", version_base="1.3")
def main(cfg: DictConfig) -> None:
    results = Path(cfg.paths.results)
    try:
        tables = built_tables(cfg.tables, results, cfg.get("include", []), cfg.include_partial, warn=True)
    except ValueError as err:
        sys.exit(f"error: {err}")
    for key, df in tables.items():
        csv, tex, wide = write(TABLES[key], df, results / "tables")
        n = int((df["source"] == "reproduced").sum())
        print(f"{key}: {len(df) - n} reported + {n} reproduced rows -> {csv}, {tex}, {wide}")
        if cfg.render:
            print(f"  rendered: {render(tex)}")
        if cfg.print:
            cols = ["source", "method", "preset", "plm", "granularity", "uniform", "distill_source", "layer_matching",
                    "target", "comp_rate", "ppl_plm", "ppl_compressed", "delta_ppl", "mnli", "qqp", "squad", "avg",
                    "speedup", "speedup_claim", "speedup_device", "partial", "train_steps", "train_minutes", "record"]
            with pd.option_context("display.width", 200, "display.max_rows", 200):
                print(df[[c for c in cols if c in df.columns]].to_string(index=False))


if __name__ == "__main__":
    main()
