"""Fine-tuning an encoder on a task (the usual BERT recipe: AdamW, linear warm-up then linear
decay, seeded), cached by the hash of its settings so every compression run reuses it.

Concurrent runs that need the same fine-tune train it once: the trainer holds a lock of its own
(eval/locks.py) and writes into a temporary folder that is renamed to the cache's name only when
complete, so no reader ever sees half-written weights; the others wait and reuse it."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import torch

from eval.records import record_id
from methods.training.objectives import label_loss

log = logging.getLogger("compbench")
DONE = "finetune.json"


def finetune(model_path: str, task, ft: dict[str, Any], out: Path, device: torch.device,
             checkpoints: Path | None = None) -> dict[str, Any]:
    """Fine-tune `model_path` on an encoder task (eval.tasks.encoder.EncoderTask) into `out`,
    through the shared trainer on the task's labels, resumable from `checkpoints` (default: beside
    `out`)."""
    from transformers import AutoTokenizer

    from methods.training.trainer import TrainConfig, Trainer

    torch.manual_seed(ft["seed"])  # the task head's initialisation
    revision = task.run.model.revision   # pins a hub model (part of the identity)
    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=revision)
    kwargs = {} if task.is_qa else {"num_labels": task.num_labels}
    model = task.model_class().from_pretrained(model_path, use_safetensors=True, revision=revision,
                                               **kwargs).to(device)
    tc = TrainConfig.from_dict(ft)
    # one seed for the head and dropout, and the for-loop AdamW: the fine-tunes made before the
    # shared trainer (the shipped teacher, cached baselines) come out bit for bit the same
    checkpoints = checkpoints or out.with_name(out.name + ".checkpoints")
    trainer = Trainer(tc, device, checkpoints, progress=task.run.progress, fused=False)
    fit = trainer.fit(
        model, lambda epoch: task.training_batches(tokenizer, tc.batch_size, tc.seed + epoch, tc.max_train_features),
        label_loss, seed_rng=False)
    shutil.rmtree(checkpoints, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    metrics = {name: task.score(model, tokenizer, ex, device) for name, ex in task.eval_sets().items()}
    info = {"model": model_path, "task": task.name, "finetune": ft, "steps": fit.steps, "train_s": fit.wall_s,
            "training": fit.to_record(), "metrics": metrics, "headline": task.headline(metrics)}
    (out / DONE).write_text(json.dumps(info, indent=2))
    return info


def ensure_finetuned(model_name: str, model_path: str, task, ft: dict[str, Any], cache: Path,
                     device: torch.device) -> Path:
    """The cached fine-tuned checkpoint for (model, task, recipe), trained here if absent."""
    from eval.locks import RecordLock

    key = record_id({"model": model_path, "task": task.settings.__dict__, "finetune": ft})
    out = cache / f"{model_name}-{task.name}-{key}"
    if (out / DONE).is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with RecordLock(cache / f"{out.name}.lock") as lock:
        if (out / DONE).is_file():          # finished by the job that held the lock while we waited
            log.info("reusing the fine-tune another job finished: %s", out)
            return out
        for leftover in cache.glob(f".{out.name}.tmp-*"):   # of writers that died: we hold the lock
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = cache / f".{out.name}.tmp-{socket.gethostname()}-{os.getpid()}"
        log.info("fine-tuning %s on %s -> %s%s", model_name, task.name, out, " (after waiting)" if lock.waited else "")
        finetune(model_path, task, ft, tmp, device, checkpoints=out.with_name(out.name + ".checkpoints"))
        if out.exists():                    # a folder without its DONE file: an older, unfinished write
            shutil.rmtree(out)
        os.replace(tmp, out)
    return out
