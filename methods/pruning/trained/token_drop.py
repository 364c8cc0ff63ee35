"""Token pruning inside a BERT encoder (PoWER-BERT, LTP): the encoder's layers run as usual, and
after each layer a policy scores the tokens by the attention they receive and removes some.

    significance(t) = Σ_heads Σ_alive queries softmax(q kᵀ/√d + mask)[·, t]     (PoWER-BERT)
    soft mode:  h ← h ⊙ m  (the policy's soft masks; the sequence keeps its length)
    hard mode:  the dropped tokens leave the sequence (the batch is compacted to its longest row)
[CLS] is always kept. A token removed after layer j keeps its layer-j state as its output, so
per-token heads (SQuAD's span logits) still read every position (as in token dropping, Hou et
al. 2022); classification reads [CLS]. Tokens kept per layer are counted for the FLOPs rate.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions as EncoderOutput

from methods.core.hooks import forward_hooks


def key_valid(mask: torch.Tensor | None, shape: tuple[int, int], device) -> torch.Tensor:
    """(B, T) bool of the keys a token may attend to, from the model's processed attention mask."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    m = mask[:, 0, 0, :] if mask.dim() == 4 else mask
    return m if m.dtype == torch.bool else m == 0


class TokenPolicy(nn.Module):
    """Decides, after layer j, which tokens stay (hard) or their multipliers (soft)."""

    def soft(self, layer: int, sig: torch.Tensor, alive: torch.Tensor) -> torch.Tensor | None:
        return None

    def keep(self, layer: int, sig: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TokenDroppingEncoder(nn.Module):
    """Replaces a BERT encoder (its `layer` list is the same modules)."""

    def __init__(self, encoder: nn.Module, policy: TokenPolicy, heads: int):
        super().__init__()
        self.layer = encoder.layer
        self.policy, self.heads = policy, heads
        self.hard = False
        self.tokens_per_layer: list[torch.Tensor] = []   # (B,) tokens each layer processed, last forward

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any):
        h = hidden_states
        B, T, _ = h.shape
        alive = key_valid(attention_mask, (B, T), h.device)
        pos = torch.arange(T, device=h.device).expand(B, T)
        out = h.clone()
        self.tokens_per_layer = []
        neg = torch.finfo(h.dtype).min
        for j, layer in enumerate(self.layer):
            self.tokens_per_layer.append(alive.sum(1))
            ext = torch.zeros(alive.shape, dtype=h.dtype, device=h.device).masked_fill(~alive, neg)[:, None, None, :]
            cap: dict[str, torch.Tensor] = {}
            sa = layer.attention.self
            with forward_hooks(post=[(sa.query, lambda _m, a, y: cap.__setitem__("q", y)),
                                     (sa.key, lambda _m, a, y: cap.__setitem__("k", y))]):
                h = layer(h, ext)
            sig = self.significance(cap["q"], cap["k"], ext, alive)
            soft = self.policy.soft(j, sig, alive)
            if soft is not None and not self.hard:
                h = h * soft.unsqueeze(-1).to(h.dtype)
                continue
            if not self.hard:
                continue
            keep = self.policy.keep(j, sig, alive) & alive
            keep[:, 0] = True
            gone = alive & ~keep
            out[torch.arange(B, device=h.device).unsqueeze(1).expand_as(pos)[gone], pos[gone]] = h[gone]
            # compact: the kept tokens first, in their order; the batch shrinks to its longest row
            order = torch.sort((~keep).to(torch.int8), dim=1, stable=True)[1]
            n = int(keep.sum(1).max())
            order = order[:, :n]
            h = torch.gather(h, 1, order.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
            pos = torch.gather(pos, 1, order)
            alive = torch.gather(keep, 1, order)
        b_idx = torch.arange(B, device=h.device).unsqueeze(1).expand_as(pos)
        out[b_idx[alive], pos[alive]] = h[alive]
        if not self.hard:
            out = h
        return EncoderOutput(last_hidden_state=out)

    def significance(self, q: torch.Tensor, k: torch.Tensor, ext: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        B, T, D = q.shape
        hd = D // self.heads
        q = q.view(B, T, self.heads, hd).transpose(1, 2)
        k = k.view(B, T, self.heads, hd).transpose(1, 2)
        probs = torch.softmax((q @ k.transpose(-1, -2)).float() / hd ** 0.5 + ext.float(), dim=-1)
        probs = probs * alive[:, None, :, None]
        return probs.sum((1, 2))


def install(model: nn.Module, policy: TokenPolicy) -> TokenDroppingEncoder:
    """Put a token-dropping encoder in place of the model's BERT encoder."""
    base = getattr(model, model.base_model_prefix)
    enc = TokenDroppingEncoder(base.encoder, policy, model.config.num_attention_heads)
    base.encoder = enc
    return enc


def token_flops(model: nn.Module, tokens_per_layer: list[torch.Tensor]) -> torch.Tensor:
    """Per example, the encoder FLOPs (2 per multiply-add) of its layers at the tokens each ran:
    the four attention projections and the FFN (linear in tokens) and attention scores and context
    (quadratic)."""
    cfg = model.config
    d, f = cfg.hidden_size, cfg.intermediate_size
    total = 0
    for n in tokens_per_layer:
        n = n.double()
        total = total + 2 * n * (4 * d * d + 2 * d * f) + 4 * n * n * d
    return total
