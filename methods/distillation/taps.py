"""What distillation reads off a model in one forward: logits, the label loss, the hidden states
(embeddings first), and per layer the heads' queries, keys and values (captured by hooks on the
block's q/k/v linears), from which attention maps and MiniLM relations are computed."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from methods.core.hooks import forward_hooks
from methods.core.outputs import task_logits

MASK_BIAS = -1e4  # added to padded keys: exp() underflows to 0 without -inf's NaNs in a KL


@dataclass
class Features:
    logits: tuple[torch.Tensor, ...]
    loss: torch.Tensor | None
    hidden: tuple[torch.Tensor, ...]          # hidden[0]: embeddings; hidden[l]: output of layer l
    mask: torch.Tensor                        # (B, T) bool: real tokens
    heads: int
    q: dict[int, torch.Tensor] = field(default_factory=dict)   # layer l (1-based) -> (B, H, T, d)
    k: dict[int, torch.Tensor] = field(default_factory=dict)
    v: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def layers(self) -> int:
        return len(self.hidden) - 1

    def key_bias(self, dtype: torch.dtype) -> torch.Tensor:
        return ((~self.mask).to(dtype) * MASK_BIAS)[:, None, None, :]

    def attention_logp(self, layer: int) -> torch.Tensor:
        """log softmax(q kᵀ / √d + mask) of layer `layer`, (B, H, T, T): the model's attention
        distribution (BERT's scaled dot product), computed from the captured queries and keys."""
        q, k = self.q[layer], self.k[layer]
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        return torch.log_softmax(scores + self.key_bias(scores.dtype), dim=-1)


class Tapped(nn.Module):
    """Wraps a task model: forward(**batch) returns `Features`. `qkv_layers` names the layers
    (1-based) whose queries, keys and values are captured; `extra` holds the losses' learned
    parts (projections), so that the trainer optimises them with the student."""

    def __init__(self, model: nn.Module, family, qkv_layers: tuple[int, ...] = (), extra: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.family = family
        self.qkv_layers = tuple(qkv_layers)
        self.extra = extra if extra is not None else nn.Module()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer when an epoch starts (RAIL-KD draws its layers per epoch)."""
        self.epoch = epoch

    def forward(self, **batch) -> Features:
        cfg = self.model.config
        heads = cfg.num_attention_heads
        blocks = self.family.blocks(self.model)
        q_name, k_name, v_name = self.family.sequential[0][:3]
        found: dict[str, dict[int, torch.Tensor]] = {"q": {}, "k": {}, "v": {}}
        hooks = []
        for layer in self.qkv_layers:
            mods = dict(blocks[layer - 1].named_modules())
            for key, name in (("q", q_name), ("k", k_name), ("v", v_name)):
                hooks.append((mods[name], _capture(found[key], layer, heads)))
        with forward_hooks(post=hooks):
            out = self.model(**batch, output_hidden_states=True)
        logits = task_logits(out)
        mask = batch["attention_mask"].bool() if "attention_mask" in batch else torch.ones_like(batch["input_ids"],
                                                                                                dtype=torch.bool)
        return Features(logits, getattr(out, "loss", None), tuple(out.hidden_states), mask, heads,
                        found["q"], found["k"], found["v"])


def _capture(store: dict[int, torch.Tensor], layer: int, heads: int):
    def hook(module, args, output):
        b, t, width = output.shape
        store[layer] = output.view(b, t, heads, width // heads).transpose(1, 2)
    return hook
