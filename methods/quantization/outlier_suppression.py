"""Outlier Suppression (Wei et al., 2022): post-training W6A6 / W4A4 quantization of BERT, as the
authors' code does it (wimh966/outlier_suppression: `gamma_migration.py`, `token_wise_clipping.py`,
`observer.AvgPruneMinMaxObserver`, `fake_quant.LSQPlusFakeQuantize`, `ptq_qa_quant.py`).

Quantizers (the reference's `QuantizedBert*` modules; `scope: reference`):
  weights: every encoder linear, the word / position / token-type embeddings and the task head's
    linears; symmetric, per output channel (per row for embeddings), min-max.
  activations: per tensor, asymmetric, static. Every LayerNorm output (the last one too), Q, K
    and V, the attention probabilities, the attention context and the FFN's GELU output; for
    classification also the pooler's input (first token) and the pooled output. The head's own
    output stays in full precision.
  `scope: linears` (compbench's earlier variant) quantizes only the inputs of the encoder linears
  and the encoder's weights.

Algorithm (paper §4; the reference's `main`):
  1. Gamma Migration. A LayerNorm followed by a residual is quantized in its non-scaling form
     x' = x̂ + β/γ. γ moves into the weights of the linears that read it (W·diag(γ)) and onto the
     shortcut (x'·γ, in full precision). The last LayerNorm, with no residual after it, keeps γ.
  2. Token-wise Clipping, coarse. For a ratio p, each calibration batch drops the tokens whose
     maximum exceeds the p-quantile of |token maxima|, and those whose minimum lies below minus the
     p-quantile of |token minima|. The range is the extremes of the remaining tokens, averaged over
     batches. Attention probabilities and the unpadded pooler tensors take plain min-max.
     p runs down from 1 in steps of 0.01·4096 / (batch × length), two significant digits, at most
     0.01, over a span of 0.9 / 0.3 / 0.1 for 4 / 6 / 8 bits. The winner is the p with the least
     MSE between the quantized and full-precision head outputs, summed over all calibration
     batches. Statistics are taken in full precision; the loss quantizes activations only.
  3. Token-wise Clipping, fine (LSQ+). Each activation quantizer's scale and zero point are
     learnt on the same loss, weights again in full precision:
       - Adam, lr 1e-5, cosine decay to 0, 3 epochs over batches of 8 (SQuAD) or 32 (GLUE);
       - straight-through rounding;
       - LSQ's gradient scale 1/√(numel·q_max).
  4. The weights are quantized; the model is evaluated with every quantizer on.

Declared deviations from the reference:
  - Calibration: the harness's `calib.nsamples` features (the reference takes 256 training
    examples). They are regrouped into the reference's batches of 32 (search) and 8 / 32
    (learning).
  - Widths other than 4, 6 and 8 bits, which the reference does not define, take the span of the
    nearest defined width below.
  - A LayerNorm scale with |γ| < 1e-5 is clamped to ±1e-5 before migration; the reference divides
    by it as is. No such γ occurs in BERT or MiniLM.
  - The migrated LayerNorm keeps the model's eps (1e-12 for BERT). The reference builds its
    non-scaling LayerNorm as a new `nn.LayerNorm`, which silently takes PyTorch's default 1e-5:
    it moves the migrated outputs by up to 2e-3 (relative) and the full-precision model's output
    by 2e-4, a side effect rather than part of the method.
  - The migrated reader keeps Q(W·γ)/γ and reads Q(x')·γ, the same product.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import ModelMethod, TableRow, register
from methods.core.calibration import InputBatches, model_inputs, rebatch
from methods.core.hooks import attach, attach_attention_probs
from methods.quantization.base import QuantLedger
from methods.quantization.quantizer import quantize_weight
from methods.core.settings import Bits, Count, LearningRate

SCOPES = ("reference", "linears")
CLIP_SPAN = {4: 0.9, 6: 0.3, 8: 0.1}          # the reference's `a_bit_iters`
F32_EPS = float(torch.finfo(torch.float32).eps)


def clip_ratios(abits: int, batch_size: int, seq_len: int, step: float | None = None,
                span: float | None = None) -> list[float]:
    """The reference's grid (`cac_step_iters`): p = 1 − step·i for i < span / step."""
    if step is None:
        step = min(float(format(128 * 32 * 0.01 / batch_size / seq_len, ".2g")), 0.01)
    if span is None:
        span = CLIP_SPAN[max([b for b in CLIP_SPAN if b <= abits] or [min(CLIP_SPAN)])]
    return [1.0 - step * i for i in range(int(span / step))]


def token_clip_range(tok_min: torch.Tensor, tok_max: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's `prune_token`: leave out the tokens whose maximum exceeds the `ratio`-quantile
    of |token maxima| (or whose minimum is below minus that of |token minima|); the range is the
    extremes of the tokens left."""
    upper = torch.quantile(tok_max.abs(), ratio)
    lower = -torch.quantile(tok_min.abs(), ratio)
    return tok_min[tok_min >= lower].min(), tok_max[tok_max <= upper].max()


def qparams(lo: torch.Tensor, hi: torch.Tensor, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric scale and integer zero point of the range [lo, hi] widened to hold 0."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / qmax, min=1e-8)
    return scale, torch.clamp(-torch.round(lo / scale), 0, qmax)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def grad_scaled(t: torch.Tensor, factor: float) -> torch.Tensor:
    """`t` forward, `factor`·gradient backward (LSQ's step-size gradient scale)."""
    return (t - t * factor).detach() + t * factor


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmax: int,
               grad_factor: float | None = None) -> torch.Tensor:
    """Per-tensor asymmetric fake quantization with the zero point rounded (straight-through);
    with `grad_factor`, LSQ+: both gradients scaled by `grad_factor`."""
    zero = round_ste(zero)                      # a learnt zero point is rounded in every forward
    if grad_factor is not None:
        zero = grad_scaled(zero, grad_factor)
        scale = grad_scaled(scale, grad_factor)
    q = torch.clamp(round_ste(x / scale) + zero, 0, qmax)
    return (q - zero) * scale


def tokens_bld(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """(batch, length, features) → the non-padding tokens' rows."""
    return x[keep] if keep is not None else x.reshape(-1, x.shape[-1])


def tokens_probs(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """(batch, heads, queries, keys) → one row per non-padding query token (all heads and keys)."""
    return tokens_bld(x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1), keep)


class ActQuantizer:
    """One activation quantizer: the full-precision token extremes of each calibration batch
    (`observe`), a token-clipped range averaged over batches (`fit`), then a static asymmetric
    range, learnable as LSQ+ scale and zero point (`quant`)."""

    def __init__(self, name: str, bits: int, prune: bool, tokens: Callable):
        self.name, self.bits, self.prune, self.tokens = name, bits, prune, tokens
        self.qmax = 2 ** bits - 1
        self.scale, self.zero = torch.ones(()), torch.zeros(())
        self.mode = "off"                       # off | observe | quant
        self.learning = False
        self.keep: torch.Tensor | None = None   # the current batch's non-padding tokens, while observing
        self.coarse: tuple[float, float] | None = None
        self.stats: list[tuple[torch.Tensor, torch.Tensor]] = []     # per batch: token minima, maxima

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        t = self.tokens(x.detach().float(), self.keep)
        self.stats.append((t.amin(-1).cpu(), t.amax(-1).cpu()))

    def fit(self, ratio: float) -> None:
        """The reference's AvgPruneMinMaxObserver at `ratio` over the observed batches. The
        statistics are of the full-precision model, so one forward pass serves every ratio."""
        lo = hi = None
        for i, (tmin, tmax) in enumerate(self.stats):
            b_lo, b_hi = token_clip_range(tmin, tmax, ratio) if self.prune else (tmin.min(), tmax.max())
            lo, hi = (b_lo, b_hi) if i == 0 else ((lo * i + b_lo) / (i + 1), (hi * i + b_hi) / (i + 1))
        self.scale, self.zero = qparams(lo, hi, self.qmax)

    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        """The quantized tensor, or None (unchanged) when off or observing."""
        if self.mode == "observe":
            self.observe(x)
        if self.mode != "quant":
            return None
        s, z = self.scale.to(x.device), self.zero.to(x.device)
        factor = 1.0 / (x.numel() * self.qmax) ** 0.5 if self.learning else None
        return fake_quant(x.float(), s, z, self.qmax, factor).to(x.dtype)

    def range(self) -> tuple[float, float]:
        s, z = float(self.scale), float(torch.round(self.zero))
        return -z * s, (self.qmax - z) * s


@dataclass
class Point:
    """Where one quantizer sits: a module's output (`post`) or input, or an attention module's
    probabilities; `gamma` marks a migrated LayerNorm and `readers` the linears that read it."""
    quant: ActQuantizer
    module: nn.Module
    where: str                                  # post | pre | probs
    gamma: torch.Tensor | None = None
    readers: tuple[nn.Module, ...] = ()


def safe_gamma(norm: nn.Module) -> torch.Tensor:
    g = norm.weight.detach().float()
    return torch.where(g.abs() < 1e-5, torch.full_like(g, 1e-5) * torch.where(g < 0, -1.0, 1.0), g)


def is_qa(model: nn.Module) -> bool:
    return hasattr(model, "qa_outputs")


@register("outlier_suppression")
class OutlierSuppression(QuantLedger, ModelMethod):
    accepts = (InputBatches,)
    rows = {"table4": TableRow("Outlier Suppression", "147", uniform="UQ")}

    def __init__(self, wbits: Bits = 6, abits: Bits = 6, gamma_migration: bool = True, scope: str = "reference",
                 clip_step: float | None = None, clip_span: float | None = None, batch_size: Count | None = 32,
                 learn_epochs: int = 3, learn_lr: LearningRate = 1e-5, learn_batch_size: Count | None = None,
                 nominal_base: int | None = None):
        super().__init__(wbits, True, -1, "channel", "minmax", nominal_base)
        if not 2 <= abits <= 16:
            raise ValueError(f"abits must be 2..16, got {abits}")
        if scope not in SCOPES:
            raise ValueError(f"outlier_suppression: scope must be one of {SCOPES}, got {scope!r}")
        if clip_step is not None and not 0 < clip_step <= 1:
            raise ValueError(f"outlier_suppression: clip_step must be in (0, 1] (or null), got {clip_step}")
        if clip_span is not None and not 0 < clip_span < 1:
            raise ValueError(f"outlier_suppression: clip_span must be in (0, 1) (or null), got {clip_span}")
        for name, v in (("batch_size", batch_size), ("learn_batch_size", learn_batch_size)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"outlier_suppression: {name} must be an integer >= 1 (or null), got {v!r}")
        if not isinstance(learn_epochs, int) or learn_epochs < 0:
            raise ValueError(f"outlier_suppression: learn_epochs must be an integer >= 0, got {learn_epochs!r}")
        self.abits, self.migrate, self.scope = abits, gamma_migration, scope
        self.clip_step, self.clip_span = clip_step, clip_span
        self.batch_size, self.learn_batch_size = batch_size, learn_batch_size
        self.epochs, self.lr = learn_epochs, learn_lr
        self.points: list[Point] = []
        self.facts: dict[str, Any] = {}

    @property
    def needs_calibration(self) -> bool:
        return True

    def check_model(self, linears, family=None) -> None:
        if family is not None and family.attention != "bert":
            raise ValueError("outlier_suppression's Gamma Migration is written for post-LN encoders (BERT family), "
                             f"not '{family.name}'; for decoders use method=smoothquant")

    # ---- where the quantizers sit -----------------------------------------------------------------

    def quant_points(self, model: nn.Module, family) -> list[Point]:
        """The reference's activation quantizers (or, with `scope: linears`, the encoder linears'
        inputs only), in forward order."""
        bits, full = self.abits, self.scope == "reference"
        blocks = family.blocks(model)

        def act(name, prune=True, tokens=tokens_bld):
            return ActQuantizer(name, bits, prune, tokens)

        def norm(name, ln, readers):
            if not (readers and self.migrate):
                return Point(act(name), ln, "post")
            return Point(act(name), ln, "post", safe_gamma(ln), tuple(readers))

        def qkv(b):
            return [b.attention.self.query, b.attention.self.key, b.attention.self.value]

        emb_norm = next(m for n, m in model.named_modules() if n.endswith("embeddings.LayerNorm"))
        points = [norm("embeddings.LayerNorm", emb_norm, qkv(blocks[0]))]
        for i, b in enumerate(blocks):
            att = b.attention.self
            if full:
                points += [Point(act(f"{i}.attention.self.{n}"), getattr(att, n), "post")
                           for n in ("query", "key", "value")]
                points.append(Point(act(f"{i}.attention.probs", prune=False, tokens=tokens_probs), att, "probs"))
            points.append(Point(act(f"{i}.attention.output.dense"), b.attention.output.dense, "pre"))
            points.append(norm(f"{i}.attention.output.LayerNorm", b.attention.output.LayerNorm, [b.intermediate.dense]))
            points.append(Point(act(f"{i}.output.dense"), b.output.dense, "pre"))
            last = i + 1 == len(blocks)
            if not last or (full and is_qa(model)):
                points.append(norm(f"{i}.output.LayerNorm", b.output.LayerNorm, [] if last else qkv(blocks[i + 1])))
        if full and not is_qa(model) and getattr(getattr(model, "bert", None), "pooler", None) is not None:
            points.append(Point(act("pooler.dense", prune=False), model.bert.pooler.dense, "pre"))
            points.append(Point(act("classifier", prune=False), model.classifier, "pre"))
        return points

    def attach(self, model: nn.Module) -> None:
        """Hook every quantizer in; it acts only in `observe` and `quant` modes."""
        def on_probs(q):
            return lambda x: (lambda y: x if y is None else y)(q(x))

        def on_input(q):
            return lambda _m, a: (lambda y: None if y is None else (y, *a[1:]))(q(a[0]))

        def on_output(q, g):
            if g is None:
                return lambda _m, _a, out: q(out)

            def migrated(_m, _a, out):          # quantize x' = out / γ, hand on Q(x')·γ
                gamma = g.to(out.device, out.dtype)
                y = q(out / gamma)
                return None if y is None else y * gamma
            return migrated

        probs = {}
        for p in self.points:
            if p.where == "probs":
                probs[p.module] = on_probs(p.quant)
            elif p.where == "pre":
                attach(p.module, "act_quant", on_input(p.quant))
            else:
                attach(p.module, "act_quant", on_output(p.quant, p.gamma), pre=False)
        if probs:
            attach_attention_probs(model, probs)

    def set_mode(self, mode: str) -> None:
        for p in self.points:
            p.quant.mode = mode

    def fit(self, ratio: float) -> None:
        for p in self.points:
            p.quant.fit(ratio)

    # ---- the algorithm ----------------------------------------------------------------------------

    def head_outputs(self, model: nn.Module, batch: dict, device) -> list[torch.Tensor]:
        """What the reference's loss compares: start and end logits at the non-padding tokens
        (QA), or the logits (classification)."""
        out = model(**model_inputs(batch, device))
        if hasattr(out, "start_logits"):
            keep = batch["attention_mask"].to(device) == 1
            return [out.start_logits[keep].float(), out.end_logits[keep].float()]
        return [out.logits.float()]

    def loss(self, model, batch, target, device) -> torch.Tensor:
        return sum(nn.functional.mse_loss(o, t) for o, t in zip(self.head_outputs(model, batch, device), target))

    @torch.no_grad()
    def observe(self, model, batches, device) -> None:
        """One full-precision pass that records every quantizer's token extremes per batch."""
        self.set_mode("observe")
        for p in self.points:
            p.quant.stats = []
        for b in batches:
            keep = (b["attention_mask"] == 1).to(device)
            for p in self.points:
                p.quant.keep = keep
            model(**model_inputs(b, device))
        for p in self.points:
            p.quant.keep = None
        self.set_mode("quant")

    def compress_model(self, model: nn.Module, family, calib: InputBatches, device: torch.device,
                       batch_size: int = 8) -> nn.Module:
        model.to(device).eval()
        for prm in model.parameters():
            prm.requires_grad_(False)
        search = rebatch(calib.batches, self.batch_size or 32)
        learn = rebatch(calib.batches, self.learn_batch_size or (8 if is_qa(model) else 32))
        with torch.no_grad():
            search_fp = [self.head_outputs(model, b, device) for b in search]
            learn_fp = [self.head_outputs(model, b, device) for b in learn] if self.epochs else []
        self.points = self.quant_points(model, family)
        self.attach(model)

        seq_len = max(b["input_ids"].shape[1] for b in search)
        ratios = clip_ratios(self.abits, self.batch_size or 32, seq_len, self.clip_step, self.clip_span)
        self.observe(model, search, device)
        losses = []
        for r in ratios:                        # coarse: one ratio for every quantizer
            self.fit(r)
            with torch.no_grad():
                losses.append(sum(float(self.loss(model, b, t, device)) for b, t in zip(search, search_fp)))
        best = min(range(len(ratios)), key=lambda i: (losses[i], i))
        self.fit(ratios[best])
        for p in self.points:
            p.quant.coarse = p.quant.range()
        learnt = self.learn(model, learn, learn_fp, device) if self.epochs else None
        self.quantize_weights(model, family)
        self.facts = {"ratio": ratios[best], "ratios": [ratios[0], ratios[-1], len(ratios)],
                      "coarse_loss": losses[best], "minmax_loss": losses[0], "coarse_losses": losses,
                      "learn_losses": learnt,
                      "coarse_ranges": {p.quant.name: p.quant.coarse for p in self.points},
                      "search_batches": len(search), "learn_batches": len(learn)}
        return model

    def learn(self, model, batches, targets, device) -> list[float]:
        """LSQ+ on every activation quantizer (the reference's `learn_scale`); returns the mean
        loss of each epoch."""
        params = []
        for p in self.points:
            p.quant.scale = p.quant.scale.detach().clone().float().requires_grad_(True)
            p.quant.zero = p.quant.zero.detach().clone().float().requires_grad_(True)
            p.quant.learning = True
            params += [p.quant.scale, p.quant.zero]
        opt = torch.optim.Adam(params, lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs * len(batches), eta_min=0.0)
        epochs = []
        with torch.enable_grad():
            for _ in range(self.epochs):
                total = 0.0
                for b, t in zip(batches, targets):
                    self.clamp_qparams()
                    opt.zero_grad()
                    loss = self.loss(model, b, t, device)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach())
                epochs.append(total / len(batches))
        self.clamp_qparams()
        for p in self.points:
            p.quant.scale, p.quant.zero = p.quant.scale.detach(), p.quant.zero.detach()
            p.quant.learning = False
        return epochs

    @torch.no_grad()
    def clamp_qparams(self) -> None:
        """What the reference's LSQ+ quantizer does before each forward."""
        for p in self.points:
            p.quant.scale.abs_().clamp_(min=F32_EPS)
            p.quant.zero.clamp_(0, p.quant.qmax)

    @torch.no_grad()
    def quantize_weights(self, model, family) -> None:
        """Per-channel symmetric min-max. A migrated reader quantizes W·diag(γ) and keeps
        Q(W·γ)/γ, since its LayerNorm hook hands it Q(x')·γ. `scope: reference` also quantizes
        the embeddings (per row) and the head's linears."""
        migrated = {id(r): p.gamma for p in self.points for r in p.readers}

        def quantize(W: torch.Tensor, g: torch.Tensor | None) -> None:
            Wm = W.float() * g.to(W.device) if g is not None else W.float()
            Q = quantize_weight(Wm, self.spec).dequantize()
            W.copy_((Q / g.to(W.device) if g is not None else Q).to(W.dtype))

        for i, block in enumerate(family.blocks(model)):
            for name, layer in family.linears(block).items():
                W = weight_matrix(layer)
                quantize(W, migrated.get(id(layer)))
                self.account(i, name, rows=W.shape[0], cols=W.shape[1])
        if self.scope == "reference":
            for name, mod in model.named_modules():
                head = name in ("qa_outputs", "classifier", "bert.pooler.dense")
                if isinstance(mod, nn.Embedding) or (head and isinstance(mod, nn.Linear)):
                    quantize(mod.weight.data, None)
                    self.account(-1, name, rows=mod.weight.shape[0], cols=mod.weight.shape[1])

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "abits": self.abits, "act_mode": "per_tensor_static_asym", "scope": self.scope,
                "gamma_migration": self.migrate, **self.facts,
                "activation_ranges": {p.quant.name: list(p.quant.range()) for p in self.points}}
