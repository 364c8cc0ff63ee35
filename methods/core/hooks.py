"""The one owner of forward-hook registration: temporary hooks that are always removed, and
persistent ones (simulated activation quantization) that replace their predecessor."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

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
