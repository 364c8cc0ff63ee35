"""Run one compression + evaluation (or a Hydra multirun sweep with -m / +sweep=...).

    python scripts/run.py method=sparsegpt method.sparsity=0.5
    python scripts/run.py +sweep=table3
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from eval.pipeline import USER_ERRORS, run  # noqa: E402
from eval.validate import ConfigError, check_overrides  # noqa: E402
from tables.speedups import speedup_of  # noqa: E402

log = logging.getLogger("compbench")


def say(line: str) -> None:
    """The run's summary line: into the job's log (Hydra's job logging writes <job>.log, run.log) and
    once on stdout, where Hydra's default console handler already writes every log line."""
    log.info(line)
    if not any(getattr(h, "stream", None) is sys.stdout for h in logging.getLogger().handlers):
        print(line)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        record = run(resolved)
    except USER_ERRORS as err:   # printed once, as the exit message
        sys.exit(f"error: {err}")
    comp = record["compression"]
    head = f"[{record['id']}] {cfg.model.name} {cfg.method.name}: compression rate {comp['comp_rate']:.4f}"
    if record.get("headline") is not None:
        score = f"{cfg.task.name} {record['headline']:.2f}" + (f" (delta {record['delta']:+.2f})"
                                                             if "delta" in record else "")
    else:
        score = "ppl " + ", ".join(f"{ds} {m['ppl']:.3f}" if m["ppl"] is not None else f"{ds} n/a"
                                   for ds, m in record["metrics"].items() if "ppl" in m)
    s = speedup_of(record)
    speed = f", speedup {s.shown}x ({s.basis})" if s else ""
    say(f"{head}, {score}{speed}")


if __name__ == "__main__":
    try:   # before Hydra: its own messages for these list every option
        check_overrides(sys.argv[1:], Path(__file__).resolve().parent.parent / "conf")
    except ConfigError as err:
        sys.exit(f"error: {err}")
    main()
