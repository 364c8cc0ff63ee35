"""The shared trainer's speed: tokens/s and achieved FLOP/s of a training step (forward, backward,
AdamW) against the device's measured matmul peak, beside evaluation (forward only) on the same
batches in the same process. FLOPs are counted by torch's FLOP counter.

    python scripts/bench_train.py [device=cuda] [bench_train.batch_size=32]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from methods.training.objectives import label_loss  # noqa: E402
from eval.pipeline import resolve_device  # noqa: E402
from eval.provenance import hardware  # noqa: E402
from eval.tasks.base import build_task  # noqa: E402
from methods.core.hardware import matmul_peak  # noqa: E402
from methods.core.calibration import model_inputs  # noqa: E402
from methods.training.trainer import TrainConfig, Trainer  # noqa: E402


def forward_flops(model, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(**batch)
    return float(counter.get_total_flops())


@hydra.main(config_path="../conf", config_name="bench_train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    c = OmegaConf.to_container(cfg, resolve=True)
    b = c["bench_train"]
    device = resolve_device(c["device"])
    task = build_task(c)
    task.prepare()
    loaded = task.load(device)
    batches = task.training_batches(loaded.tokenizer, b["batch_size"], seed=0, limit=b["batch_size"] * (b["steps"] + 1))
    peak = matmul_peak(str(device))
    tokens = sum(int(x["attention_mask"].sum()) for x in batches[1:])

    model = loaded.model
    model.eval()
    inputs = [model_inputs(x, device) for x in batches]
    with torch.no_grad():
        model(**inputs[0])
        t0 = time.perf_counter()
        for x in inputs[1:]:
            model(**x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        eval_s = time.perf_counter() - t0
    eval_flops = forward_flops(model, inputs[1]) * len(inputs[1:])

    trainer = Trainer(TrainConfig(steps=len(batches), batch_size=b["batch_size"], lr=1e-5, warmup_ratio=0.0),
                      device, progress=False)
    fit = trainer.fit(model, lambda epoch: batches, label_loss)
    # the fit's wall time includes the warm-up step: time the steady state from the fit's own rate
    train_flops_per_s = fit.flops_per_s
    out = {"device": hardware(device)["name"], "batch_size": b["batch_size"], "seq_len": c["task"]["max_length"],
           "peak_flops_per_s": peak, "train_tokens_per_s": fit.tokens_per_s,
           "train_flops_per_s": train_flops_per_s, "train_peak_fraction": train_flops_per_s / peak,
           "eval_tokens_per_s": tokens / eval_s, "eval_flops_per_s": eval_flops / eval_s,
           "eval_peak_fraction": eval_flops / eval_s / peak,
           "train_over_eval_efficiency": train_flops_per_s / (eval_flops / eval_s)}
    print(f"device {out['device']}: measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"train step  {out['train_tokens_per_s']:8.0f} tok/s  {train_flops_per_s / 1e9:6.1f} GFLOP/s  "
          f"{100 * out['train_peak_fraction']:.0f}% of peak")
    print(f"evaluation  {out['eval_tokens_per_s']:8.0f} tok/s  {out['eval_flops_per_s'] / 1e9:6.1f} GFLOP/s  "
          f"{100 * out['eval_peak_fraction']:.0f}% of peak")
    print(f"ratio train/eval FLOP/s efficiency: {out['train_over_eval_efficiency']:.2f}")
    Path(b["out"]).parent.mkdir(parents=True, exist_ok=True)
    Path(b["out"]).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
