"""Measure a record set's Speedup cells again on its records' own configs (conf/remeasure.yaml):

    python scripts/remeasure.py set=results/tiny-llama-wt2
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from tables.remeasure import remeasure, target  # noqa: E402


@hydra.main(config_path="../conf", config_name="remeasure", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        folder, records = target(cfg.set, list(cfg.records))
    except ValueError as err:
        sys.exit(f"error: {err}")
    out = remeasure(folder, list(cfg.presets), OmegaConf.to_container(cfg.timing), records,
                    bool(cfg.replace_differing))
    for old, new in out.replaced.items():
        print(f"{old} -> {new}: {out.cells[new]}")
    for old, why in out.differ.items():
        print(f"{old}: {'REPLACED' if old in out.replaced else 'KEPT'}, {why}", file=sys.stderr)
    if any(old not in out.replaced for old in out.differ):
        sys.exit(1)


if __name__ == "__main__":
    main()
