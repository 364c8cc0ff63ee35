"""The one owner of forward-hook registration: temporary hooks that are always removed, and
persistent ones (simulated activation quantization) that replace their predecessor."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

Hook = Callable
_PERSISTENT = "_compbench_hooks"


@contextmanager
def forward_hooks(pre: Iterable[tuple[nn.Module, Hook]] = (),
                  post: Iterable[tuple[nn.Module, Hook]] = ()) -> Iterator[None]:
    """Register forward pre-hooks `(module, fn(module, args))` and forward hooks
    `(module, fn(module, args, output))` for the duration of the `with` block."""
    handles = []
    try:
        for module, fn in pre:
            handles.append(module.register_forward_pre_hook(fn))
        for module, fn in post:
            handles.append(module.register_forward_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


def attach(module: nn.Module, key: str, fn: Hook, pre: bool = True) -> None:
    """Keep `fn` on `module` from now on (a pre-hook, or a forward hook with `pre=False`); a hook
    attached earlier under the same key is removed first."""
    held = module.__dict__.setdefault(_PERSISTENT, {})
    if key in held:
        held.pop(key).remove()
    held[key] = module.register_forward_pre_hook(fn) if pre else module.register_forward_hook(fn)



def attached(module: nn.Module) -> frozenset[str]:
    """The keys of the hooks `attach` keeps on `module`."""
    return frozenset(module.__dict__.get(_PERSISTENT, {}))


_PROBS = "_compbench_probs"
_PROBS_ATTENTION = "compbench_probs"


def _probs_attention(module: nn.Module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0,
                     **_kw):
    """Eager attention whose probabilities pass through the module's probability hook (if any)
    before they weight the values."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    fn = module.__dict__.get(_PROBS)
    if fn is not None:
        weights = fn(weights)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


def attach_attention_probs(model: nn.Module, hooks: dict[nn.Module, Hook]) -> None:
    """Keep `fn(probs) -> probs` on the attention probabilities of each attention module in `hooks`
    (shape batch × heads × queries × keys): the model switches to an eager attention function
    that calls them. Hugging Face's attention registry is the only way into the probabilities."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
    AttentionInterface.register(_PROBS_ATTENTION, _probs_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(_PROBS_ATTENTION, eager_mask)     # the additive mask eager attention adds
    model.config._attn_implementation = _PROBS_ATTENTION
    for module, fn in hooks.items():
        module.__dict__[_PROBS] = fn
