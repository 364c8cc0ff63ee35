"""Merge the results folders of several machines (conf/merge.yaml):

    python scripts/merge.py inputs=[/mnt/a/results,/mnt/b/results] out=results
    python scripts/merge.py upgrade=true inputs=[results/old] out=results/old   # older schema
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tables.collect import resolve_set  # noqa: E402
from tables.merge import merge, upgrade_folder  # noqa: E402


@hydra.main(config_path="../conf", config_name="merge", version_base="1.3")
def main(cfg: DictConfig) -> None:
    inputs = [resolve_set(p) for p in cfg.inputs]
    problems: list[str] = []
    if cfg.upgrade:
        for src in inputs:
            mapping, failed = upgrade_folder(src, src)
            print(f"{src}: upgraded {len(mapping)} records")
            for old, new in sorted(mapping.items()):
                print(f"  {old} -> {new}")
            problems += [f"could not upgrade {p}: {why}" for p, why in failed]
    report = merge(inputs, cfg.out)
    col = report.collection
    print(f"{cfg.out}: {len(col.records)} records ({len(report.written)} new, {col.duplicates} duplicates "
          f"merged), {len(col.conflicts)} conflicts, {len(col.skipped)} unreadable files")
    problems += report.lines()
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
