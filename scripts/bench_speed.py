"""Compression wall time and peak memory: compbench's batched engine against the reference codes'
procedure, and evaluation throughput against a one-window-per-forward loop.

The GPTQ/SparseGPT/Wanda reference drivers feed one calibration sample per forward, keep a
running per-sample Hessian/norm update for every linear separately, and prune or quantize each
linear on its own. `reference_sequential` below replays that procedure on the same model,
calibration windows and solver semantics (a replay, not the reference code: the result file says
`replayed`); with `bench.reference_repo=<checkout of IST-DASLab/sparsegpt>` it uses that
checkout's own `SparseGPT` class (add_batch + fasterprune) for SparseGPT. Prints
ours/reference per method; the target is <= 0.5.

`bench.synthetic=llama-7b` times a Llama-7B of random weights (the real shapes; timing only, its
outputs mean nothing) on random calibration tokens, `bench.nsamples` × `bench.seqlen` of them;
`bench.layers=N` compresses its first N blocks only (both procedures; every block costs the same),
while the evaluation runs the whole model.

    python scripts/bench_speed.py [bench.methods=[sparsegpt,wanda,gptq]] [model=...] [device=cuda]
    python scripts/bench_speed.py bench.synthetic=llama-7b device=cuda
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
from methods.quantization.gptq import gptq_quantize  # noqa: E402
from eval.perplexity import perplexity  # noqa: E402


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


def _method(method: str, cfg: DictConfig):
    return build(method, **dict(cfg.bench.settings.get(method) or {}))


def _solver(method: str, cfg: DictConfig):
    """(make per-layer state, prune or quantize (layer, state)) in the reference's shape."""
    if method == "sparsegpt" and cfg.bench.reference_repo:
        sys.path.insert(0, str(Path(cfg.bench.reference_repo).expanduser()))
        ref = importlib.import_module("sparsegpt")
        if not torch.cuda.is_available():  # the reference syncs CUDA after each layer
            torch.cuda.synchronize = lambda *a, **k: None
            torch.cuda.empty_cache = lambda *a, **k: None
        sparsity = _method(method, cfg).target.ratio
        return ref.SparseGPT, lambda layer, st: st.fasterprune(sparsity, blocksize=128, percdamp=0.01)
    if method == "sparsegpt":
        target = _method(method, cfg).target

        def prune(layer, st):
            W = weight_matrix(layer)
            W.copy_(sparsegpt_prune(W, st.hessian, target).to(W.dtype))
        return lambda layer: _PerSampleStats(layer, True), prune
    if method == "wanda":
        target = _method(method, cfg).target

        def prune(layer, st):
            W = weight_matrix(layer)
            score = W.abs().float() * torch.sqrt(st.scaler_row).reshape(1, -1)
            W[mask_for(score, target, per_row=True)] = 0
        return lambda layer: _PerSampleStats(layer, False), prune
    if method == "gptq":   # the reference's add_batch Hessian, then fasterquant (lazy batches, dampening)
        gptq = _method(method, cfg)

        def quantize(layer, st):
            W = weight_matrix(layer)
            res = gptq_quantize(W, st.hessian, gptq.spec, gptq.blocksize, gptq.percdamp, gptq.act_order,
                                gptq.static_groups)
            W.copy_(res.weight.to(W.dtype))
        return lambda layer: _PerSampleStats(layer, True), quantize
    raise ValueError(f"no reference procedure for '{method}' (have: sparsegpt, wanda, gptq, awq)")


@torch.no_grad()
def reference_sequential(lm: models.LoadedModel, windows: torch.Tensor, make_state, prune,
                         device: torch.device, true_sequential: bool = False) -> float:
    """The reference drivers' loop (llama_sequential / prune_wanda), one sample per forward;
    `true_sequential` (GPTQ's flag) gathers each group of linears' statistics after the groups
    before it are compressed."""
    t0 = time.perf_counter()
    session = engine.Session(lm.model, lm.family, device, progress=False)
    session.capture(TokenWindows(windows), batch_size=1)  # the Catcher sees one sample per model call
    inps = session.inputs
    for block in lm.family.blocks(lm.model):
        block.to(device)
        layers = lm.family.linears(block)
        for group in (lm.family.sequential if true_sequential else (tuple(layers),)):
            states = {n: make_state(layers[n]) for n in group}
            with forward_hooks(post=[(layers[n], lambda _m, i, o, n=n: states[n].add_batch(i[0].data, o.data))
                                     for n in group]):
                for hidden, (args, kw) in inps:
                    block(hidden, *args, **kw)
            for n in group:
                prune(layers[n], states[n])
        outs = []
        for hidden, extra in inps:
            y = block(hidden, *extra[0], **extra[1])
            outs.append((y[0] if isinstance(y, tuple) else y, extra))
        inps = outs
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


# the module llm-awq inspects for a Llama scale pair's output error (else the linear itself)
_AWQ_INSPECT = {"input_layernorm": "self_attn", "post_attention_layernorm": "mlp"}


@torch.no_grad()
def reference_awq(lm: models.LoadedModel, windows: torch.Tensor, awq, device: torch.device) -> None:
    """llm-awq's `run_awq` procedure, replayed on a Llama (a replay, not its code): every
    calibration sample in one forward per block, each linear's inputs cached on the CPU; per
    scale pair a grid of `n_grid` ratios, each scaling and fake-quantizing the pair's linears and
    running the module the reference inspects (the attention for q/k/v, the MLP for gate/up, else
    the linear) over every cached token, the block's state restored after each; the scales folded
    in; the clipping search per linear (not q/k) on 512 of its tokens, 256 rows at a time; then
    round-to-nearest. The harness's AWQ searches on a sample of tokens with the linears' own
    outputs (methods/quantization/awq.py says so): this measures the reference's cost, not ours."""
    from methods.core.arch import fold_scale, scale_pairs
    from methods.quantization.awq import rtn, search_clip
    from methods.quantization.quantizer import quantize_weight
    if lm.model.config.model_type != "llama":
        raise ValueError("the AWQ replay follows llm-awq's Llama path: a Llama model only")
    session = engine.Session(lm.model, lm.family, device, progress=False)
    session.capture(TokenWindows(windows), batch_size=windows.shape[0])   # all samples in one forward
    (hidden, (args, kw)), = session.inputs
    for block in lm.family.blocks(lm.model):
        block.to(device)
        layers = lm.family.linears(block)
        mods = dict(block.named_modules())
        feats: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
        with forward_hooks(post=[(layers[n], lambda _m, i, _o, n=n: feats[n].append(i[0].detach().cpu()))
                                 for n in layers]):
            out = block(hidden, *args, **kw)
        x_of = {n: torch.cat(v) for n, v in feats.items()}
        for prev, group in scale_pairs(lm.family, block):
            inspect = mods[_AWQ_INSPECT.get(prev, group[0])]
            x = x_of[group[0]].to(device)
            call = (lambda m=inspect: m(hidden_states=x, **kw)) if inspect is mods.get("self_attn") else \
                (lambda m=inspect: m(x))
            ref = call()
            ref = ref[0] if isinstance(ref, tuple) else ref
            x_mean = x.abs().reshape(-1, x.shape[-1]).float().mean(0)
            saved = {k: v.cpu() for k, v in inspect.state_dict().items()}
            best, best_s = float("inf"), None
            for k in range(awq.n_grid):
                sc = x_mean.pow(k / awq.n_grid).clamp(min=1e-4)
                sc = sc / (sc.max() * sc.min()).sqrt()
                for n in group:
                    W = weight_matrix(mods[n])
                    W.copy_((rtn(W.float() * sc, awq.spec) / sc).to(W.dtype))
                y = call()
                loss = float(((y[0] if isinstance(y, tuple) else y) - ref).float().pow(2).mean())
                if loss < best:
                    best, best_s = loss, sc
                inspect.load_state_dict(saved)
            fold_scale(block, prev, group, best_s)
            for n in group:
                x_of[n] = x_of[n] / best_s.cpu().to(x_of[n].dtype)
            del x, ref
        for name, layer in layers.items():
            W = weight_matrix(layer)
            if not name.endswith(("q_proj", "k_proj")):
                flat = x_of[name].reshape(-1, W.shape[1])
                sample = flat[0::max(1, flat.shape[0] // 512)].to(device)
                mx = search_clip(sample, W, awq.spec, awq.n_grid, awq.max_shrink, row_chunk=256)
                g = -(-W.shape[1] // mx.shape[1])
                bound = mx.repeat_interleave(g, dim=1)[:, :W.shape[1]].to(W.dtype)
                W.copy_(torch.clamp(W, -bound, bound))
            W.copy_(quantize_weight(W, awq.spec).dequantize().to(W.dtype))
        hidden = out[0] if isinstance(out, tuple) else out
        del feats, x_of


def _fresh(cfg: DictConfig, device: torch.device, whole: bool = False) -> models.LoadedModel:
    """The model under test, fresh; a random-weight one has `bench.layers` blocks unless `whole`."""
    if cfg.bench.synthetic:
        torch.manual_seed(cfg.seed)
        return models.random_llama(cfg.bench.synthetic, device, models.resolve_dtype(cfg.bench.dtype),
                                   cfg.bench.seqlen, None if whole else cfg.bench.layers)
    return models.load(cfg.model.path, cfg.model.dtype, device, cfg.model.seqlen)


def _windows(cfg: DictConfig, lm: models.LoadedModel) -> torch.Tensor:
    """The calibration windows: the run's calibration text, or random tokens for a random model."""
    if cfg.bench.synthetic:
        g = torch.Generator().manual_seed(cfg.seed)
        return torch.randint(0, lm.model.config.vocab_size, (cfg.bench.nsamples, lm.seqlen), generator=g)
    src = data_mod.DataSource.from_config(cfg.paths.data_root, cfg.offline)
    return data_mod.calibration_windows(cfg.calib.source, src, lm.tokenizer, cfg.calib.nsamples, lm.seqlen,
                                        cfg.seed, path=cfg.calib.get("path"), join=cfg.calib.get("join", "\n\n"))


def _timed(fn, device: torch.device) -> tuple[float, int | None]:
    """Seconds of fn() and, on a GPU, its peak allocated bytes."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated()
    return time.perf_counter() - t0, None


def compression(cfg: DictConfig, device: torch.device, windows: torch.Tensor) -> list[dict]:
    """Each method's compress wall time, ours against the reference procedure, best of repeats."""
    rows = []
    for method in cfg.bench.methods:
        if method == "awq":
            def reference(lm):
                reference_awq(lm, windows, _method(method, cfg), device)
        else:
            make_state, prune = _solver(method, cfg)

            def reference(lm):
                reference_sequential(lm, windows, make_state, prune, device, _method(method, cfg).true_sequential)
        ref, ours = [], []
        for _ in range(cfg.bench.repeats):
            lm = _fresh(cfg, device)
            ref.append(_timed(lambda: reference(lm), device))
            del lm
            lm = _fresh(cfg, device)
            ours.append(_timed(lambda: engine.compress(lm.model, lm.family, _method(method, cfg), TokenWindows(windows),
                                                       device, cfg.engine.batch_size, progress=False), device))
            del lm
        (t_ref, m_ref), (t_ours, m_ours) = min(ref), min(ours)
        rows.append({"method": method, "settings": dict(cfg.bench.settings.get(method) or {}),
                     "reference_s": t_ref, "compbench_s": t_ours, "ratio": t_ours / t_ref, "target": 0.5,
                     "reference_peak_bytes": m_ref, "compbench_peak_bytes": m_ours})
        print(f"{method:10s} reference {t_ref:8.2f}s  compbench {t_ours:8.2f}s  ratio {t_ours / t_ref:.3f}"
              f"  ({'meets' if t_ours / t_ref <= 0.5 else 'misses'} <= 0.5)"
              + (f"  peak {m_ours / 2**30:.1f} GiB (reference {m_ref / 2**30:.1f})" if m_ours else ""), flush=True)
    return rows


def evaluation(cfg: DictConfig, device: torch.device, lm: models.LoadedModel) -> dict:
    """Perplexity-protocol tokens/s: the harness's batched loop against one window per forward,
    on the same `bench.eval_windows` windows (random tokens for a random model)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    ids = torch.randint(0, lm.model.config.vocab_size, (cfg.bench.eval_windows * lm.seqlen,), generator=g)
    out = {"windows": cfg.bench.eval_windows, "seqlen": lm.seqlen, "batch_size": cfg.eval.batch_size}
    for name, batch in (("one_window_s", 1), ("compbench_s", cfg.eval.batch_size)):
        perplexity(lm.model, ids, lm.seqlen, batch_size=1, max_windows=1, device=device, progress=False)  # warm-up
        out[name], _ = _timed(lambda b=batch: perplexity(lm.model, ids, lm.seqlen, batch_size=b, device=device,
                                                         progress=False), device)
    out["tokens_per_s"] = {"one_window": out["windows"] * lm.seqlen / out["one_window_s"],
                           "compbench": out["windows"] * lm.seqlen / out["compbench_s"]}
    out["ratio"], out["target"] = out["one_window_s"] / out["compbench_s"], 2.0
    print(f"eval       one window/forward {out['one_window_s']:8.2f}s  compbench {out['compbench_s']:8.2f}s  "
          f"speedup {out['ratio']:.2f}x  ({'meets' if out['ratio'] >= 2 else 'misses'} >= 2)", flush=True)
    return out


def run(cfg: DictConfig) -> dict:
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    lm = _fresh(cfg, device, whole=True)
    windows = _windows(cfg, lm)
    report = {"model": cfg.bench.synthetic or cfg.model.name, "synthetic": bool(cfg.bench.synthetic),
              "compressed_blocks": cfg.bench.layers if cfg.bench.synthetic and cfg.bench.layers else "all",
              "nsamples": int(windows.shape[0]), "seqlen": lm.seqlen, "batch_size": cfg.engine.batch_size,
              "hardware": hardware(device), "torch": torch.__version__,
              "reference_solver": "checkout" if cfg.bench.reference_repo else "replayed",
              "config": OmegaConf.to_container(cfg.bench)}
    if cfg.bench.eval_windows:
        report["evaluation"] = evaluation(cfg, device, lm)
    del lm
    report["results"] = compression(cfg, device, windows)
    out = Path(cfg.bench.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"-> {out}")
    return report


@hydra.main(config_path="../conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
