"""Distillation sources as composable losses of (student features, teacher features).

  logits        KL(softmax(z_T/τ) ‖ softmax(z_S/τ))·τ²  (start and end logits for QA)      [L]
  hard          the student's loss on the task labels
  hidden        MSE(H_T, W_h H_S) on real tokens (or the normalised [CLS] state, PKD)    [H]
  attention     KL per head between attention maps, per query row (Aguilar et al.)      [A]
  embeddings    MSE(E_T, W_e E_S) (TinyBERT)                                            [T]
  relations     MiniLM: attention-map KL and value-relation KL, last layers              [A]
  mh_relations  MiniLMv2: query-query, key-key, value-value relations over R relation heads [A]

Every loss is zero when the student's features equal the teacher's. The projections W_h, W_e
exist only when the widths differ, and train with the student.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from methods.distillation.matching import Matching
from methods.distillation.taps import Features
from methods.training.objectives import logit_kl
from methods.core.settings import Positive

SOURCES = ("logits", "hard", "hidden", "attention", "embeddings", "relations", "mh_relations")
SURVEY_LETTER = {"logits": "L", "hidden": "H", "attention": "A", "relations": "A", "mh_relations": "A",
                 "embeddings": "T"}


def masked_mse(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real tokens (x, y: (B, T, d); mask: (B, T))."""
    per_token = (x.float() - y.float()).pow(2).mean(-1)
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1)


def row_kl(t_logp: torch.Tensor, s_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(t ‖ s) of each row distribution (last dim) of (B, H, T, T) maps, averaged over heads
    and the real query rows."""
    kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)            # (B, H, T)
    m = mask[:, None, :].to(kl.dtype).expand_as(kl)
    return (kl * m).sum() / m.sum().clamp_min(1)


def relation_logp(x: torch.Tensor, heads: int, bias: torch.Tensor) -> torch.Tensor:
    """log softmax(x_r x_rᵀ / √d_r) of (B, H, T, d) states regrouped into `heads` relation heads."""
    b, h, t, d = x.shape
    if (h * d) % heads:
        raise ValueError(f"relation heads {heads} do not divide the width {h * d}")
    xr = x.transpose(1, 2).reshape(b, t, heads, h * d // heads).transpose(1, 2)
    scores = xr @ xr.transpose(-1, -2) / xr.shape[-1] ** 0.5
    return torch.log_softmax(scores.float() + bias, dim=-1)


class _Lazy(Mapping):
    """Per-layer tensors computed on first use (attention maps of the layers a matching reads)."""

    def __init__(self, fn: Callable[[int], torch.Tensor]):
        self.fn, self.cache = fn, {}

    def __getitem__(self, layer: int) -> torch.Tensor:
        if layer not in self.cache:
            self.cache[layer] = self.fn(layer)
        return self.cache[layer]

    def __iter__(self):
        return iter(self.cache)

    def __len__(self) -> int:
        return len(self.cache)


class Objective(nn.Module):
    """The weighted sum of the chosen sources (`weights`: source -> weight)."""

    def __init__(self, weights: Mapping[str, float], matching: Matching, student_width: int, teacher_width: int,
                 temperature: Positive = 1.0, hidden_tokens: str = "all", hidden_normalize: bool = False,
                 relation_heads: int | None = None, teacher_relation_layer: int = -1):
        super().__init__()
        unknown = sorted(set(weights) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown distillation sources {unknown}; known: {', '.join(SOURCES)}")
        if hidden_tokens not in ("all", "cls"):
            raise ValueError(f"hidden_tokens must be 'all' or 'cls', got '{hidden_tokens}'")
        if "attention" in weights and matching.kind in ("ckd", "alp"):
            raise ValueError(f"matching '{matching.kind}' combines teacher layers: it applies to hidden states, "
                             f"not to attention maps")
        self.weights = {k: float(v) for k, v in weights.items() if v}
        self.matching = matching
        self.temperature = temperature
        self.hidden_tokens, self.hidden_normalize = hidden_tokens, hidden_normalize
        self.relation_heads = relation_heads
        self.teacher_relation_layer = teacher_relation_layer
        same = student_width == teacher_width
        self.proj_h = nn.Identity() if same else nn.Linear(student_width, teacher_width)
        self.proj_e = nn.Identity() if same else nn.Linear(student_width, teacher_width)

    def qkv_layers(self, layers: int, teacher: bool) -> tuple[int, ...]:
        """The layers whose queries, keys and values a side must capture."""
        if "attention" in self.weights:
            return tuple(range(1, layers + 1))
        if "relations" in self.weights or "mh_relations" in self.weights:
            if teacher:
                return (self._teacher_layer(layers),)
            return (layers,)
        return ()

    def _teacher_layer(self, layers: int) -> int:
        r = self.teacher_relation_layer
        return layers + 1 + r if r < 0 else r

    # ---- the sources ----------------------------------------------------------------------------
    def logits(self, s: Features, t: Features, batch) -> torch.Tensor:
        return torch.stack([logit_kl(a, b, self.temperature) for a, b in zip(s.logits, t.logits)]).mean()

    def hard(self, s: Features, t: Features, batch) -> torch.Tensor:
        if s.loss is None:
            raise ValueError("the 'hard' source needs labels in the training batches")
        return s.loss

    def hidden(self, s: Features, t: Features, batch, epoch: int) -> torch.Tensor:
        def cost(i, j, x, y):
            x = self.proj_h(x)
            if self.hidden_tokens == "cls":
                x, y = x[:, 0], y[:, 0]
                if self.hidden_normalize:
                    x, y = F.normalize(x.float(), dim=-1), F.normalize(y.float(), dim=-1)
                return (x.float() - y.float()).pow(2).sum(-1).mean()
            return masked_mse(x, y, s.mask)
        return self.matching.loss(s.hidden, t.hidden, cost, epoch)

    def attention(self, s: Features, t: Features, batch, epoch: int) -> torch.Tensor:
        return self.matching.loss(_Lazy(s.attention_logp), _Lazy(t.attention_logp),
                                  lambda i, j, x, y: row_kl(y, x, s.mask), epoch, combinable=False)

    def embeddings(self, s: Features, t: Features, batch) -> torch.Tensor:
        return masked_mse(self.proj_e(s.hidden[0]), t.hidden[0], s.mask)

    def relations(self, s: Features, t: Features, batch) -> torch.Tensor:
        ls, lt = s.layers, self._teacher_layer(t.layers)
        bias = s.key_bias(torch.float32)
        at = row_kl(t.attention_logp(lt).float(), s.attention_logp(ls).float(), s.mask)
        vr = row_kl(relation_logp(t.v[lt], t.heads, bias), relation_logp(s.v[ls], s.heads, bias), s.mask)
        return at + vr

    def mh_relations(self, s: Features, t: Features, batch) -> torch.Tensor:
        ls, lt = s.layers, self._teacher_layer(t.layers)
        heads = self.relation_heads or s.heads
        bias = s.key_bias(torch.float32)
        return sum(row_kl(relation_logp(getattr(t, x)[lt], heads, bias),
                          relation_logp(getattr(s, x)[ls], heads, bias), s.mask) for x in ("q", "k", "v"))

    def forward(self, s: Features, t: Features, batch, epoch: int = 0) -> tuple[torch.Tensor, dict]:
        parts = {}
        for name in self.weights:
            fn = getattr(self, name)
            parts[name] = fn(s, t, batch, epoch) if name in ("hidden", "attention") else fn(s, t, batch)
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, {k: v.detach() for k, v in parts.items()}
