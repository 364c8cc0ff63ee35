"""Compression wall time: compbench's batched engine vs the reference codes' procedure.

The GPTQ/SparseGPT/Wanda reference drivers feed one calibration sample per forward, keep a
running per-sample Hessian/norm update for every linear separately, and prune each linear on
its own. `reference_sequential` below replays that procedure on the same model, calibration
windows and solver semantics; with `bench.reference_repo=<checkout of IST-DASLab/sparsegpt>`
it uses that checkout's own `SparseGPT` class (add_batch + fasterprune) for SparseGPT. Prints
ours/reference per method; the target is <= 0.5.

    python scripts/bench_speed.py [bench.methods=[sparsegpt,wanda]] [model=...] [device=cuda]
"""
from __future__ import annotations

import importlib
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from eval import data as data_mod  # noqa: E402
from eval import models  # noqa: E402
from eval.provenance import hardware  # noqa: E402
from methods.core import engine  # noqa: E402
from methods.core.arch import weight_matrix  # noqa: E402
from methods.core.base import build  # noqa: E402
from methods.core.calibration import TokenWindows  # noqa: E402
from methods.core.hooks import forward_hooks  # noqa: E402
from methods.pruning.masks import mask_for  # noqa: E402
from methods.pruning.sparsegpt import sparsegpt_prune  # noqa: E402


class _PerSampleStats:
    """The reference `add_batch`: running average updated once per calibration sample."""

    def __init__(self, layer: torch.nn.Module, hessian: bool):
        cols = weight_matrix(layer).shape[1]
        self.hessian = torch.zeros(cols, cols, device=layer.weight.device) if hessian else None
        self.scaler_row = torch.zeros(cols, device=layer.weight.device)
        self.n = 0

    def add_batch(self, inp: torch.Tensor, out=None) -> None:
        inp = inp.reshape(-1, inp.shape[-1]).t().float()
        if self.hessian is not None:
            self.hessian *= self.n / (self.n + 1)
        self.scaler_row *= self.n / (self.n + 1)
        self.n += 1
        if self.hessian is not None:
            x = math.sqrt(2 / self.n) * inp
            self.hessian += x.matmul(x.t())
        self.scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / self.n


def _solver(method: str, cfg: DictConfig):
    """(make per-layer state, prune(layer, state)) in the reference's shape."""
    if method == "sparsegpt" and cfg.bench.reference_repo:
        sys.path.insert(0, str(Path(cfg.bench.reference_repo).expanduser()))
        ref = importlib.import_module("sparsegpt")
        if not torch.cuda.is_available():  # the reference syncs CUDA after each layer
            torch.cuda.synchronize = lambda *a, **k: None
            torch.cuda.empty_cache = lambda *a, **k: None
        return ref.SparseGPT, lambda layer, st: st.fasterprune(cfg.bench.sparsity, blocksize=128, percdamp=0.01)
    if method == "sparsegpt":
        def prune(layer, st):
            W = weight_matrix(layer)
            W.copy_(sparsegpt_prune(W, st.hessian, build("sparsegpt", sparsity=cfg.bench.sparsity).target))
        return lambda layer: _PerSampleStats(layer, True), prune
    if method == "wanda":
        def prune(layer, st):
            W = weight_matrix(layer)
            score = W.abs().float() * torch.sqrt(st.scaler_row).reshape(1, -1)
            W[mask_for(score, build("wanda", sparsity=cfg.bench.sparsity).target, per_row=True)] = 0
        return lambda layer: _PerSampleStats(layer, False), prune
    raise ValueError(f"no reference procedure for '{method}' (have: sparsegpt, wanda)")


@torch.no_grad()
def reference_sequential(lm: models.LoadedModel, windows: torch.Tensor, make_state, prune,
                         device: torch.device) -> float:
    """The reference drivers' loop (llama_sequential / prune_wanda), one sample per forward."""
    t0 = time.perf_counter()
    session = engine.Session(lm.model, lm.family, device, progress=False)
    session.capture(TokenWindows(windows), batch_size=1)  # the Catcher sees one sample per model call
    inps = session.inputs
    for block in lm.family.blocks(lm.model):
        block.to(device)
        layers = lm.family.linears(block)
        states = {n: make_state(layer) for n, layer in layers.items()}
        with forward_hooks(post=[(layer, lambda _m, i, o, n=n: states[n].add_batch(i[0].data, o.data))
                                 for n, layer in layers.items()]):
            for hidden, (args, kw) in inps:
                block(hidden, *args, **kw)
        for n, layer in layers.items():
            prune(layer, states[n])
        outs = []
        for hidden, extra in inps:
            y = block(hidden, *extra[0], **extra[1])
            outs.append((y[0] if isinstance(y, tuple) else y, extra))
        inps = outs
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _fresh(cfg: DictConfig, device: torch.device) -> models.LoadedModel:
    return models.load(cfg.model.path, cfg.model.dtype, device, cfg.model.seqlen)


@hydra.main(config_path="../conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    lm = _fresh(cfg, device)
    src = data_mod.DataSource.from_config(cfg.paths.data_root, cfg.offline)
    windows = data_mod.calibration_windows(cfg.calib.source, src, lm.tokenizer, cfg.calib.nsamples, lm.seqlen,
                                           cfg.seed, path=cfg.calib.get("path"), join=cfg.calib.get("join", "\n\n"))
    rows = []
    for method in cfg.bench.methods:
        make_state, prune = _solver(method, cfg)
        t_ref = min(reference_sequential(_fresh(cfg, device), windows, make_state, prune, device)
                    for _ in range(cfg.bench.repeats))
        t_ours = math.inf
        for _ in range(cfg.bench.repeats):
            ours = _fresh(cfg, device)
            t0 = time.perf_counter()
            engine.compress(ours.model, ours.family, build(method, sparsity=cfg.bench.sparsity),
                            TokenWindows(windows), device, cfg.engine.batch_size, progress=False)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t_ours = min(t_ours, time.perf_counter() - t0)
        rows.append({"method": method, "reference_s": round(t_ref, 3), "compbench_s": round(t_ours, 3),
                     "ratio": round(t_ours / t_ref, 3), "target": 0.5})
        print(f"{method:10s} reference {t_ref:8.2f}s  compbench {t_ours:8.2f}s  ratio {t_ours / t_ref:.3f}"
              f"  ({'meets' if t_ours / t_ref <= 0.5 else 'misses'} <= 0.5)")
    out = Path(cfg.bench.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": cfg.model.name, "nsamples": cfg.calib.nsamples, "seqlen": lm.seqlen,
                               "batch_size": cfg.engine.batch_size, "hardware": hardware(device),
                               "reference_solver": "checkout" if cfg.bench.reference_repo else "replayed",
                               "config": OmegaConf.to_container(cfg.bench), "results": rows}, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
