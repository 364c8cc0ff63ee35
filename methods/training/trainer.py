"""The one training loop of compbench: fine-tuning, distillation, low-rank recovery, adaptors and
QAT all train through `Trainer.fit`.

    for step in range(steps):                       # seeded; resumable at any checkpoint
        for micro-batch in the step's accumulation:
            teacher outputs (frozen, no grad), student outputs (autocast on GPU)
            loss(student outputs, teacher outputs, batch) / accumulation -> backward
        clip gradients; AdamW step; linear warm-up then linear decay; on_step hook
        every eval_every steps: evaluate (optionally keep the best weights)
        every checkpoint_every steps: model, optimizer, schedule, RNG and cost to disk
                                                    # safetensors, never a pickle (checkpoints.py)

Its cost (steps, samples, tokens, wall time, device-hours) and speed (tokens/s, achieved FLOP/s
against the device's measured matmul peak) come back with the fit, for the run record.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from methods.core.progress import bar as progress_bar
from methods.training import checkpoints

log = logging.getLogger("compbench")

Batch = dict[str, Any]
Loss = Callable[[Any, Any, Batch], Any]   # (student outputs, teacher outputs, batch) -> loss [, parts]
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")
CHECKPOINT = "trainer_state"   # + checkpoints.SUFFIX
FINAL = "final"
BEST = "best"


@dataclass(frozen=True)
class TrainConfig:
    """The recipe (conf/train/*.yaml). `steps` counts optimizer steps; null: `epochs` passes."""

    steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    precision: str = "auto"          # auto: bf16 on a GPU that has it (else fp16), fp32 on a CPU
    eval_every: int = 0              # steps between dev evaluations (0: none)
    keep_best: bool = False          # end with the best dev weights (model selection on dev)
    checkpoint_every: int = 0        # steps between checkpoints (0: none)
    seed: int = 0
    max_train_features: int | None = None   # cap on training features per epoch (smoke runs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(names)}")
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """What changes the trained weights (checkpoint spacing does not)."""
        out = asdict(self)
        out.pop("checkpoint_every")
        return out


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    if name == "fp32" or (name == "auto" and device.type != "cuda"):
        return torch.float32
    if name in ("bf16", "auto") and (device.type != "cuda" or torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    if name in ("fp16", "auto"):
        return torch.float16
    raise ValueError(f"unknown precision '{name}'; use auto, fp32, bf16 or fp16")


def param_groups(model: nn.Module, weight_decay: float, lr: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms and other vectors (the BERT recipe); a
    parameter with an `lr_scale` attribute (gates, Lagrange multipliers) learns at lr·lr_scale, one
    with `no_decay` (mask scores) without weight decay."""
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            plain = name.endswith(NO_DECAY) or p.dim() < 2 or getattr(p, "no_decay", False)
            groups.setdefault((plain, getattr(p, "lr_scale", 1.0)), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if plain else weight_decay, "lr": lr * scale}
            for (plain, scale), ps in groups.items()]


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _tokens(batch: Batch) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def _loss_and_parts(value: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if isinstance(value, tuple):
        return value[0], value[1]
    return value, {}


class Stop(Exception):
    """Raised by an `on_step` hook to end a fit early (tests kill a run this way)."""


@dataclass
class FitResult:
    steps: int
    samples: int
    tokens: int
    wall_s: float
    device_hours: float
    tokens_per_s: float
    flops: float | None
    flops_per_s: float | None
    peak_flops_per_s: float
    peak_fraction: float | None
    precision: str
    resumed_at: int | None
    final_loss: float | None
    history: list[dict[str, Any]]
    best: dict[str, Any] | None

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


class Trainer:
    """Fits a model under any loss of (student outputs, teacher outputs, batch)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, checkpoint_dir: Path | None = None,
                 progress: bool = True, fused: bool = True):
        self.cfg = cfg
        self.device = torch.device(device)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.progress = progress
        self.dtype = resolve_precision(cfg.precision, self.device)
        self.fused = fused  # fused AdamW (same maths, other rounding); fine-tunes keep the for-loop one

    def total_steps(self, per_epoch: int) -> int:
        c = self.cfg
        if c.steps:
            return c.steps
        return max(1, math.ceil(c.epochs * per_epoch / c.grad_accum))

    def fit(self, model: nn.Module, data: Callable[[int], Sequence[Batch]], loss: Loss,
            teacher: nn.Module | None = None, evaluate: Callable[[nn.Module], float] | None = None,
            on_step: Callable[[int], None] | None = None, parameters: Sequence[nn.Parameter] | None = None,
            steps: int | None = None, name: str = "fit", seed_rng: bool = True,
            on_resume: Callable[[int], None] | None = None) -> FitResult:
        """Train `model` in place. `data(epoch)` gives that epoch's (seeded, shuffled) batches;
        `teacher` is run frozen beside it; `evaluate(model)` scores the dev set (higher is better);
        `on_step(step)` runs after each optimizer step, gradients still present (AdaLoRA);
        `steps` overrides the recipe's count (a stage of a longer schedule); `name` keeps the
        checkpoints of several fits in one run apart. A model with `set_epoch` is told each epoch.
        `seed_rng=False` leaves the RNG as the caller seeded it (a fine-tune seeds once, before
        its new head is initialised). `on_resume(step)` lets a method restore the state it keeps
        outside the model (a schedule's current sparsity) when a checkpoint is resumed."""
        from methods.core.hardware import matmul_peak

        c = self.cfg
        self.name = name
        done = self._finished(model)
        if done is not None:
            return done
        autocast = self.dtype != torch.float32
        # the ceiling, measured before any training work (once per process): a machine busy with
        # other jobs lowers it, and the record keeps it beside the achieved rate
        peak = matmul_peak(str(self.device), self.dtype if autocast else torch.float32)
        if seed_rng:
            torch.manual_seed(c.seed)
        epoch_batches = {0: list(data(0))}
        per_epoch = len(epoch_batches[0])
        if per_epoch == 0:
            raise ValueError("no training batches: the task's training split is empty")
        total = steps or self.total_steps(per_epoch)
        warmup = int(c.warmup_ratio * total)
        model.to(self.device).train()
        if teacher is not None:
            teacher.to(self.device).eval().requires_grad_(False)
        params = param_groups(model, c.weight_decay, c.lr) if parameters is None else [
            {"params": list(parameters), "weight_decay": c.weight_decay}]
        trainable = [p for g in params for p in g["params"]]
        opt = torch.optim.AdamW(params, lr=c.lr, fused=self.fused and all(p.is_floating_point() for p in trainable))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(warmup, total))
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

        state = {"step": 0, "samples": 0, "tokens": 0, "wall_s": 0.0, "history": [], "best": None}
        best_weights = None
        resumed_at = self._resume(model, opt, sched, scaler, state)
        if resumed_at is not None and on_resume is not None:
            on_resume(resumed_at)
        if resumed_at is not None and state["best"] is not None and c.keep_best:
            best_weights = checkpoints.load(self._path(BEST))

        def batch_at(i: int) -> Batch:
            epoch, pos = divmod(i, per_epoch)
            if epoch not in epoch_batches:
                epoch_batches.clear()
                epoch_batches[epoch] = list(data(epoch))
            if hasattr(model, "set_epoch"):
                model.set_epoch(epoch)
            return epoch_batches[epoch][pos]

        flops_per_token = None
        bar = progress_bar(total=total, initial=state["step"], desc="train", enabled=self.progress)
        last_loss = None
        t_seg = time.perf_counter()
        try:
            for step in range(state["step"], total):
                for micro in range(c.grad_accum):
                    batch = _to(batch_at(step * c.grad_accum + micro), self.device)
                    if flops_per_token is None:  # instrumentation, not training: kept out of the wall time
                        t_count = time.perf_counter()
                        flops_per_token = self._count_flops(model, teacher, loss, batch, autocast) / _tokens(batch)
                        t_seg += time.perf_counter() - t_count
                    with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
                        t_out = None
                        if teacher is not None:
                            with torch.no_grad():
                                t_out = teacher(**batch)
                        value, parts = _loss_and_parts(loss(model(**batch), t_out, batch))
                    scaler.scale(value / c.grad_accum).backward()
                    state["samples"] += int(batch["input_ids"].shape[0])
                    state["tokens"] += _tokens(batch)
                last_loss = float(value.detach())
                scaler.unscale_(opt)
                if c.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(trainable, c.max_grad_norm)
                scaler.step(opt)
                scaler.update()
                sched.step()
                state["step"] = step + 1
                if on_step is not None:
                    on_step(step + 1)
                opt.zero_grad(set_to_none=True)
                if self.progress:
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}", refresh=False,
                                    **{k: f"{float(v):.3f}" for k, v in parts.items()})
                bar.update(1)
                if c.eval_every and evaluate is not None and (step + 1) % c.eval_every == 0:
                    best_weights = self._evaluate(model, evaluate, state, best_weights)
                if c.checkpoint_every and (step + 1) % c.checkpoint_every == 0 and step + 1 < total:
                    state["wall_s"] += time.perf_counter() - t_seg
                    t_seg = time.perf_counter()
                    self._save(model, opt, sched, scaler, state, best_weights)
        finally:
            bar.close()
        state["wall_s"] += time.perf_counter() - t_seg
        if c.keep_best and best_weights is not None:
            model.load_state_dict(best_weights)
        model.eval()
        flops = flops_per_token * state["tokens"] if flops_per_token else None
        wall = state["wall_s"]
        result = FitResult(
            steps=state["step"], samples=state["samples"], tokens=state["tokens"], wall_s=wall,
            device_hours=wall / 3600, tokens_per_s=state["tokens"] / wall if wall else 0.0,
            flops=flops, flops_per_s=flops / wall if flops and wall else None, peak_flops_per_s=peak,
            peak_fraction=flops / wall / peak if flops and wall else None,
            precision=str(self.dtype).removeprefix("torch."), resumed_at=resumed_at, final_loss=last_loss,
            history=state["history"], best=state["best"])
        self._finish(model, result)
        return result

    # ---- pieces --------------------------------------------------------------------------------
    def _count_flops(self, model, teacher, loss, batch, autocast) -> float:
        """FLOPs of one training micro-batch (teacher forward, student forward and backward),
        counted by torch's FLOP counter on a copy of the RNG state, gradients discarded."""
        from torch.utils.flop_counter import FlopCounterMode

        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        counter = FlopCounterMode(display=False)
        with counter, torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            t_out = None
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(**batch)
            value, _ = _loss_and_parts(loss(model(**batch), t_out, batch))
            value.float().backward()
        model.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, self.device)
        return float(counter.get_total_flops())

    def _evaluate(self, model, evaluate, state, best_weights):
        score = float(evaluate(model))
        model.train()
        state["history"].append({"step": state["step"], "dev": score})
        log.info("step %d: dev %.3f", state["step"], score)
        if self.cfg.keep_best and (state["best"] is None or score > state["best"]["dev"]):
            state["best"] = {"step": state["step"], "dev": score}
            best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            if self.checkpoint_dir is not None and self.cfg.checkpoint_every:
                self._atomic_save(best_weights, BEST)
        return best_weights

    def _path(self, name: str) -> Path:
        assert self.checkpoint_dir is not None
        return self.checkpoint_dir / self.name / f"{name}{checkpoints.SUFFIX}"

    def _finish(self, model: nn.Module, result: FitResult) -> None:
        """Replace the fit's checkpoints by its final weights and result: a run killed in a later
        fit (a later stage) does not redo this one."""
        if self.checkpoint_dir is None:
            return
        self._atomic_save({"config": self.cfg.identity(), "model": model.state_dict(), "result": asdict(result)},
                          FINAL)
        for name in (CHECKPOINT, BEST):
            self._path(name).unlink(missing_ok=True)

    def _finished(self, model: nn.Module) -> FitResult | None:
        if self.checkpoint_dir is None:
            return None
        checkpoints.refuse_pickles(self.checkpoint_dir / self.name, (FINAL, CHECKPOINT, BEST))
        if not self._path(FINAL).is_file():
            return None
        done = checkpoints.load(self._path(FINAL))
        if done["config"] != self.cfg.identity():
            return None
        model.load_state_dict(done["model"])
        model.to(self.device).eval()
        log.info("fit '%s' finished earlier: reusing its weights from %s", self.name, self.checkpoint_dir)
        return FitResult(**done["result"])

    def _atomic_save(self, obj: Any, name: str) -> None:
        checkpoints.save(obj, self._path(name))

    def _save(self, model, opt, sched, scaler, state, best_weights) -> None:
        if self.checkpoint_dir is None:
            return
        self._atomic_save({
            "config": self.cfg.identity(), "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "state": copy.deepcopy(state),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }, CHECKPOINT)
        log.info("checkpoint at step %d -> %s", state["step"], self._path(CHECKPOINT))

    def _resume(self, model, opt, sched, scaler, state) -> int | None:
        if self.checkpoint_dir is None or not self._path(CHECKPOINT).is_file():
            return None
        ck = checkpoints.load(self._path(CHECKPOINT))
        if ck["config"] != self.cfg.identity():
            log.warning("checkpoint in %s is of another recipe: starting afresh", self.checkpoint_dir)
            return None
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        state.update(ck["state"])
        torch.set_rng_state(ck["rng"])
        if ck["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(ck["cuda_rng"], self.device)
        log.info("resuming at step %d from %s", state["step"], self.checkpoint_dir)
        return state["step"]
