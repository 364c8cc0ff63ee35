"""Rerun a record set's records at other seeds, everything else as each record ran (conf/reseed.yaml):

    python scripts/reseed.py set=results/tiny-llama-wt2 "presets=[sparsegpt,wanda]" "seeds=[1,2]"
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tables.remeasure import reseed, target  # noqa: E402


@hydra.main(config_path="../conf", config_name="reseed", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        folder, records = target(cfg.set, list(cfg.records))
    except ValueError as err:
        sys.exit(f"error: {err}")
    seeds = list(cfg.seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        sys.exit(f"error: seeds must be a list of integers, e.g. seeds=[1,2]; got {seeds}")
    for old, new in reseed(folder, seeds, list(cfg.presets), records).items():
        print(f"{old} -> " + ", ".join(f"seed {s}: {rid}" for s, rid in new.items()))


if __name__ == "__main__":
    main()
