"""Fine-tune (or reuse the cached) task baseline of an encoder and print its scores:

    python scripts/finetune.py model=minilm task=squad_dev_split
    python scripts/finetune.py model=bert_base task=mnli finetune.epochs=3 device=cuda

The checkpoint lands under <paths.results>/finetuned/, keyed by (model, task, recipe); every
compression run on that task reuses it. The recipe is `conf/finetune/` (AdamW, linear warm-up
then decay, seeded).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from eval.data import DataMissing  # noqa: E402
from eval.finetune import DONE, ensure_finetuned  # noqa: E402
from eval.models import resolve_source  # noqa: E402
from eval.pipeline import resolve_device, seed_everything  # noqa: E402
from eval.tasks.base import build_task  # noqa: E402
from eval.tasks.encoder import EncoderTask  # noqa: E402

log = logging.getLogger("compbench")


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    c = OmegaConf.to_container(cfg, resolve=True)
    try:
        task = build_task(c)
        if not isinstance(task, EncoderTask):
            sys.exit("error: fine-tuning is for encoder tasks; pick one, e.g. task=squad_dev_split (offline) "
                     "or task=mnli")
        seed_everything(c["seed"])
        out = ensure_finetuned(c["model"]["name"], resolve_source(c["model"]["path"]), task, c["finetune"],
                               Path(c["paths"]["results"]) / "finetuned", resolve_device(c["device"]))
    except (ValueError, FileNotFoundError, DataMissing) as err:
        sys.exit(f"error: {err}")
    info = json.loads((out / DONE).read_text())
    print(f"{out}\n{task.name}: " + json.dumps(info["metrics"]))


if __name__ == "__main__":
    main()
