"""Fine-tuning an encoder on a task (the usual BERT recipe: AdamW, linear warm-up then linear
decay, seeded), cached by the hash of its settings so every compression run reuses it."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from eval.records import record_id

log = logging.getLogger("compbench")
DONE = "finetune.json"


def finetune(model_path: str, task, ft: dict[str, Any], out: Path, device: torch.device) -> dict[str, Any]:
    """Fine-tune `model_path` on an encoder task (eval.tasks.encoder.EncoderTask) into `out`."""
    from transformers import AutoTokenizer

    torch.manual_seed(ft["seed"])
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    kwargs = {} if task.is_qa else {"num_labels": task.num_labels}
    model = task.model_class().from_pretrained(model_path, use_safetensors=True, **kwargs).to(device)
    batches = []
    for epoch in range(ft["epochs"]):
        batches += task.training_batches(tokenizer, ft["batch_size"], ft["seed"] + epoch,
                                         ft.get("max_train_features"))
    steps = len(batches)
    warmup = int(ft["warmup_ratio"] * steps)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [{"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
               "weight_decay": ft["weight_decay"]},
              {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=ft["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    model.train()
    t0 = time.perf_counter()
    for step, batch in enumerate(batches):
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            log.info("finetune %s step %d/%d loss %.3f", task.name, step, steps, loss.item())
    train_s = time.perf_counter() - t0
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    metrics = {name: task.score(model, tokenizer, ex, device) for name, ex in task.eval_sets().items()}
    info = {"model": model_path, "task": task.name, "finetune": ft, "steps": steps, "train_s": train_s,
            "metrics": metrics, "headline": task.headline(metrics)}
    (out / DONE).write_text(json.dumps(info, indent=2))
    return info


def ensure_finetuned(model_name: str, model_path: str, task, ft: dict[str, Any], cache: Path,
                     device: torch.device) -> Path:
    """The cached fine-tuned checkpoint for (model, task, recipe), trained here if absent."""
    key = record_id({"model": model_path, "task": task.settings.__dict__, "finetune": ft})
    out = cache / f"{model_name}-{task.name}-{key}"
    if not (out / DONE).is_file():
        log.info("fine-tuning %s on %s -> %s", model_name, task.name, out)
        finetune(model_path, task, ft, out, device)
    return out
