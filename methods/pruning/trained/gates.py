"""L0 structure gates over a whole model (CoFi's coarse and fine masks), for BERT and Llama blocks:

    z_head (L, H)  per head unit       multiplies the head's context before the output projection
    z_mha  (L)     per attention layer multiplies the attention output (and its bias)
    z_int  (L, N)  per FFN neuron      multiplies the activation before the down projection
    z_ffn  (L)     per FFN layer       multiplies the FFN output
    z_hid  (d)     per hidden dim      multiplies every norm's output, every block output projection's
                                       output (and, without an embedding norm, the embeddings); the
                                       norms normalise over the dimensions kept (z > 0) only

With deterministic gates the masked model computes exactly what `make_physical` builds: the gate
values folded into the weights, the zero gates' heads, neurons, layers and dimensions removed.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from methods.core.arch import FAMILIES, replace_module
from methods.core.hooks import forward_hooks
from methods.core.hard_concrete import HardConcrete
from methods.pruning.encoder_units import head_dim, prune_with_masks
from methods.pruning.structure import _sliced, struct_spec, unfuse_gpt2, units
from methods.core.settings import Positive
from methods.core.search import smallest_meeting

# modules outside the blocks that read the residual stream (their input columns are hidden dims)
STREAM_READERS = ("qa_outputs", "bert.pooler.dense", "lm_head", "cls.predictions.transform.dense")


def is_norm(module: nn.Module) -> bool:
    name = type(module).__name__
    return name.endswith("LayerNorm") or name.endswith("RMSNorm")


def stream_norms(model: nn.Module, width: int) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if is_norm(m) and m.weight.shape == (width,)}


def stream_embeddings(model: nn.Module, width: int) -> list[nn.Embedding]:
    return [m for m in model.modules() if isinstance(m, nn.Embedding) and m.weight.shape[1] == width]


def restricted_norm(module: nn.Module, x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """The norm of x computed over the kept dimensions only (zeros elsewhere)."""
    xk = x[..., kept]
    if isinstance(module, nn.LayerNorm):
        bias = module.bias[kept] if module.bias is not None else None
        yk = F.layer_norm(xk, (xk.shape[-1],), module.weight[kept], bias, module.eps)
    else:  # RMSNorm
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
        xf = xk.float()
        yk = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * module.weight[kept]
    out = x.new_zeros(x.shape)
    out[..., kept] = yk.to(x.dtype)
    return out


def deterministic(gate: HardConcrete, rows: int = 1) -> torch.Tensor:
    """CoFi's test-time gates: per row, the expected number of zeros round(Σ P(z = 0)) of the
    smallest log α set to 0, the others at their deterministic value (so that the kept size is the
    expected one the constraint was trained on)."""
    z = gate.deterministic().view(rows, -1).clone()
    zeros = (1 - gate.prob_nonzero()).view(rows, -1).sum(1).round().long()
    order = gate.log_alpha.view(rows, -1).argsort(dim=1)
    for r in range(rows):
        z[r, order[r, : int(zeros[r])]] = 0
    return z.flatten()


def gated_families() -> list[str]:
    """The families the structure gates know: those whose Family says where its embeddings join
    the stream (methods/core/arch.py)."""
    return sorted(f.name for f in FAMILIES.values() if f.embedding_norm is not None)


class StructureGates(nn.Module):
    def __init__(self, model: nn.Module, family, hidden: bool = True, layers: bool = True, lr_scale: Positive = 1000.0):
        super().__init__()
        if family.embedding_norm is None:
            raise ValueError(f"structure gates know {', '.join(gated_families())} blocks, not '{family.name}'")
        unfuse_gpt2(model, family)
        self.family, self.spec, self.hd = family, struct_spec(family), head_dim(model)
        blocks = family.blocks(model)
        u = units(blocks[0], self.spec, self.hd)
        self.L, self.H, self.N = len(blocks), u.n_heads, u.n_channels
        self.d = model.config.hidden_size
        self.q_per_unit = u.q_per_unit
        self.head = HardConcrete(self.L * self.H, lr_scale=lr_scale)
        self.int = HardConcrete(self.L * self.N, lr_scale=lr_scale)
        self.mha = HardConcrete(self.L, lr_scale=lr_scale) if layers else None
        self.ffn = HardConcrete(self.L, lr_scale=lr_scale) if layers else None
        self.hid = HardConcrete(self.d, lr_scale=lr_scale) if hidden else None
        # parameters per hidden dimension of one head unit and one neuron (weights only)
        self.head_cost = (2 * self.q_per_unit + 2) * self.hd
        self.neuron_cost = len(self.spec.mlp_up) + 1
        self.embed_cost = sum(m.weight.shape[0] for m in model.modules()
                              if isinstance(m, nn.Embedding) and m.weight.shape[1] == self.d)
        out = model.get_output_embeddings()
        tied = out is not None and out.weight is model.get_input_embeddings().weight
        if out is not None and not tied and out.weight.shape[1] == self.d:
            self.embed_cost += out.weight.shape[0]

    # ---- gate values -----------------------------------------------------------------------------
    def sample(self) -> dict[str, torch.Tensor]:
        """One draw of every gate (training), or the deterministic values (evaluation)."""
        def one(g: HardConcrete | None, n: int, rows: int = 1) -> torch.Tensor:
            if g is None:
                return torch.ones(n, device=self.head.log_alpha.device)
            return g() if self.training else deterministic(g, rows)
        return {"head": one(self.head, 0, self.L).view(self.L, self.H),
                "int": one(self.int, 0, self.L).view(self.L, self.N),
                "mha": one(self.mha, self.L), "ffn": one(self.ffn, self.L), "hid": one(self.hid, self.d)}

    def expected_params(self, count_embeddings: bool) -> torch.Tensor:
        """E[parameters] of the blocks' weights (and of the embeddings with `count_embeddings`)."""
        p = lambda g, n: g.prob_nonzero() if g is not None else torch.ones(n, device=self.head.log_alpha.device)  # noqa: E731
        hid = p(self.hid, self.d).sum()
        heads = self.head.prob_nonzero().view(self.L, self.H).sum(1) * p(self.mha, self.L)
        neurons = self.int.prob_nonzero().view(self.L, self.N).sum(1) * p(self.ffn, self.L)
        total = hid * (self.head_cost * heads.sum() + self.neuron_cost * neurons.sum())
        return total + (hid * self.embed_cost if count_embeddings else 0)

    @torch.no_grad()
    def shift_to(self, target: float, count_embeddings: bool, iters: int = 40) -> float:
        """Lower every gate logit by one constant δ ≥ 0, the smallest with which the expected
        sparsity reaches `target` (the learned order of the structures is kept); returns δ."""
        gates = [g for g in (self.head, self.int, self.mha, self.ffn, self.hid) if g is not None]
        dense = self.dense_params(count_embeddings)
        start = [g.log_alpha.detach().clone() for g in gates]

        def sparsity(delta: float) -> float:
            for g, la in zip(gates, start):
                g.log_alpha.copy_(la - delta)
            return float(1 - self.expected_params(count_embeddings) / dense)

        delta = smallest_meeting(lambda d: sparsity(d) >= target, iters, cap=1e4)
        sparsity(delta)
        return delta

    def dense_params(self, count_embeddings: bool) -> int:
        return self.d * (self.head_cost * self.L * self.H + self.neuron_cost * self.L * self.N) \
            + (self.d * self.embed_cost if count_embeddings else 0)

    # ---- the masked forward ----------------------------------------------------------------------
    @contextmanager
    def applied(self, model: nn.Module, z: dict[str, torch.Tensor]) -> Iterator[None]:
        spec, width = self.spec, self.hd * self.q_per_unit
        hid = z["hid"]
        kept = hid > 0
        pre, post = [], []
        for i, block in enumerate(self.family.blocks(model)):
            m = dict(block.named_modules())
            pre.append((m[spec.o], lambda _m, a, i=i: (a[0] * z["head"][i].repeat_interleave(width).to(a[0].dtype),)))
            pre.append((m[spec.mlp_down], lambda _m, a, i=i: (a[0] * z["int"][i].to(a[0].dtype),)))
            post.append((m[spec.o], lambda _m, a, y, i=i: y * (z["mha"][i] * hid).to(y.dtype)))
            post.append((m[spec.mlp_down], lambda _m, a, y, i=i: y * (z["ffn"][i] * hid).to(y.dtype)))
        if self.hid is not None:
            for norm in stream_norms(model, self.d).values():
                post.append((norm, lambda mod, a, y: restricted_norm(mod, a[0], kept) * hid.to(y.dtype)))
            if not self.family.embedding_norm:  # token (and position) embeddings sum into the stream
                for emb in stream_embeddings(model, self.d):
                    post.append((emb, lambda _m, a, y: y * hid.to(y.dtype)))
        with forward_hooks(pre=pre, post=post):
            yield

    # ---- physical removal ------------------------------------------------------------------------
    @torch.no_grad()
    def make_physical(self, model: nn.Module) -> dict[str, list[int] | int]:
        """Fold the deterministic gates into the weights and remove every zero-gated structure."""
        was = self.training
        self.eval()
        z = {k: v.detach() for k, v in self.sample().items()}
        self.train(was)
        spec = self.spec
        hid = z["hid"]
        head_mask = z["head"] * (z["mha"] > 0).float().unsqueeze(1)
        neuron_mask = z["int"] * (z["ffn"] > 0).float().unsqueeze(1)
        for i, block in enumerate(self.family.blocks(model)):
            m = dict(block.named_modules())
            for name, layer_z in ((spec.o, z["mha"][i]), (spec.mlp_down, z["ffn"][i])):
                scale = (layer_z * hid).to(m[name].weight.dtype)
                m[name].weight.mul_(scale.unsqueeze(1))
                if m[name].bias is not None:
                    m[name].bias.mul_(scale)
        prune_with_masks(model, self.family, head_mask, neuron_mask)
        kept_dims = self.d
        if self.hid is not None:
            kept = (hid > 0).nonzero().flatten()
            kept_dims = int(kept.numel())
            self._remove_hidden(model, hid, kept)
        return {"heads_kept": [int((r > 0).sum()) for r in head_mask], "neurons_kept":
                [int((r > 0).sum()) for r in neuron_mask], "hidden_kept": kept_dims}

    def _remove_hidden(self, model: nn.Module, hid: torch.Tensor, kept: torch.Tensor) -> None:
        spec = self.spec
        emb = model.get_input_embeddings()
        out = model.get_output_embeddings()
        if out is not None and out.weight is emb.weight:  # untie before folding z into the embeddings
            out.weight = nn.Parameter(emb.weight.detach().clone())
            model.config.tie_word_embeddings = False
        for norm in stream_norms(model, self.d).values():
            norm.weight.mul_(hid.to(norm.weight.dtype))
            if getattr(norm, "bias", None) is not None:
                norm.bias.mul_(hid.to(norm.bias.dtype))
        if not self.family.embedding_norm:
            for e in stream_embeddings(model, self.d):
                e.weight.mul_(hid.to(e.weight.dtype).unsqueeze(0))
        for name, mod in list(model.named_modules()):
            if isinstance(mod, nn.Embedding) and mod.weight.shape[1] == self.d:
                new = nn.Embedding(mod.num_embeddings, kept.numel(), padding_idx=mod.padding_idx,
                                   device=mod.weight.device, dtype=mod.weight.dtype)
                new.weight.copy_(mod.weight[:, kept])
                replace_module(model, name, new)
            elif is_norm(mod) and mod.weight.shape == (self.d,):
                mod.weight = nn.Parameter(mod.weight[kept].clone())
                if getattr(mod, "bias", None) is not None:
                    mod.bias = nn.Parameter(mod.bias[kept].clone())
                if hasattr(mod, "normalized_shape"):
                    mod.normalized_shape = (kept.numel(),)
        readers = [n for n in STREAM_READERS if _has(model, n)]
        for name in readers:
            replace_module(model, name, _sliced(model.get_submodule(name), None, kept))
        for block in self.family.blocks(model):
            m = dict(block.named_modules())
            for name in (spec.q, spec.k, spec.v, *spec.mlp_up):
                replace_module(block, name, _sliced(m[name], None, kept))
            for name in (spec.o, spec.mlp_down):
                replace_module(block, name, _sliced(m[name], kept, None))


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False
