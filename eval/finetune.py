"""Fine-tuning an encoder on a task (the usual BERT recipe: AdamW, linear warm-up then linear
decay, seeded), cached by the hash of its settings so every compression run reuses it."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from eval.records import record_id

log = logging.getLogger("compbench")
DONE = "finetune.json"


def finetune(model_path: str, task, ft: dict[str, Any], out: Path, device: torch.device) -> dict[str, Any]:
    """Fine-tune `model_path` on an encoder task (eval.tasks.encoder.EncoderTask) into `out`,
    through the shared trainer on the task's labels."""
    from transformers import AutoTokenizer

    from methods.training.trainer import TrainConfig, Trainer

    torch.manual_seed(ft["seed"])  # the task head's initialisation
    revision = (task.cfg.get("model") or {}).get("revision")   # pins a hub model (part of the identity)
    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=revision)
    kwargs = {} if task.is_qa else {"num_labels": task.num_labels}
    model = task.model_class().from_pretrained(model_path, use_safetensors=True, revision=revision,
                                               **kwargs).to(device)
    tc = TrainConfig.from_dict(ft)
    # one seed for the head and dropout, and the for-loop AdamW: the fine-tunes made before the
    # shared trainer (the shipped teacher, cached baselines) come out bit for bit the same
    trainer = Trainer(tc, device, out.with_name(out.name + ".checkpoints"), progress=True, fused=False)
    fit = trainer.fit(
        model, lambda epoch: task.training_batches(tokenizer, tc.batch_size, tc.seed + epoch, tc.max_train_features),
        label_loss, seed_rng=False)
    shutil.rmtree(out.with_name(out.name + ".checkpoints"), ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    metrics = {name: task.score(model, tokenizer, ex, device) for name, ex in task.eval_sets().items()}
    info = {"model": model_path, "task": task.name, "finetune": ft, "steps": fit.steps, "train_s": fit.wall_s,
            "training": fit.to_record(), "metrics": metrics, "headline": task.headline(metrics)}
    (out / DONE).write_text(json.dumps(info, indent=2))
    return info


def label_loss(student_out, teacher_out, batch) -> torch.Tensor:
    """The task's own loss on its labels (the model computes it from the batch's targets)."""
    return student_out.loss


def ensure_finetuned(model_name: str, model_path: str, task, ft: dict[str, Any], cache: Path,
                     device: torch.device) -> Path:
    """The cached fine-tuned checkpoint for (model, task, recipe), trained here if absent."""
    key = record_id({"model": model_path, "task": task.settings.__dict__, "finetune": ft})
    out = cache / f"{model_name}-{task.name}-{key}"
    if not (out / DONE).is_file():
        log.info("fine-tuning %s on %s -> %s", model_name, task.name, out)
        finetune(model_path, task, ft, out, device)
    return out
