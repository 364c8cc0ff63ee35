"""The method interface and its registry: a method is one module under methods/ plus one
config file under conf/method/, registered by name with `@register`."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from methods.arch import weight_matrix
from methods.stats import LinearStats


class Method:
    """A compression method applied by the sequential engine, one linear at a time.

    `stats` names the calibration statistics `compress` needs (empty: no calibration data);
    `true_sequential` asks the engine to re-run calibration after each group of linears.
    """

    name: ClassVar[str]
    stats: ClassVar[frozenset[str]] = frozenset()
    true_sequential: bool = False
    plans: ClassVar[bool] = False  # True if `plan` needs a calibration pass before compression
    # False: the next block's calibration inputs come from the block before compression (AWQ)
    propagate_compressed: ClassVar[bool] = True
    # True: the method works on the whole model at once (gradients, block removal) through
    # `compress_model(model, family, windows, device, batch_size) -> model`, not block by block
    whole_model: ClassVar[bool] = False

    def __init__(self, **knobs: Any):
        self.knobs = knobs

    @property
    def needs_calibration(self) -> bool:
        return bool(self.stats) or self.plans

    def check_model(self, linears: Mapping[str, nn.Module], family=None) -> None:
        """Raise ValueError if the model's linears cannot take this method (before any work)."""

    def plan(self, session) -> None:
        """Optional pass before compression (e.g. OWL's layer-wise sparsities); see engine.Session."""

    def compress_block(self, session, index: int, block: nn.Module, inputs) -> None:
        """Compress one block's linears. Default: gather `stats` (after each true-sequential
        group, or once for the whole block) and call `compress` for each linear."""
        linears = session.family.linears(block)
        groups = session.family.sequential if self.true_sequential else (tuple(linears),)
        for group in groups:
            layers = {name: linears[name] for name in group}
            found = session.gather(block, layers, self.stats, inputs) if self.stats else {}
            for name, layer in layers.items():
                self.compress(index, name, layer, found.get(name))

    def compress(self, block: int, name: str, layer: nn.Module, stats: LinearStats | None) -> None:
        raise NotImplementedError

    def compress_model(self, model: nn.Module, family, windows: torch.Tensor | None, device: torch.device,
                       batch_size: int = 8) -> nn.Module:
        """Whole-model methods only (`whole_model = True`)."""
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """Method-specific facts for the run record."""
        return {}


_REGISTRY: dict[str, Callable[..., Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def _import_all() -> None:
    import methods
    for info in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"methods.{info.name}")


def available() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def build(name: str, **knobs: Any) -> Method:
    """Instantiate the method registered as `name` with its config knobs."""
    _import_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name](**knobs)
    except TypeError as err:
        raise ValueError(f"method '{name}': bad settings {sorted(knobs)} ({err})") from None


@torch.no_grad()
def apply_mask(layer: nn.Module, mask: torch.Tensor) -> None:
    """Zero the masked entries of the layer's (out, in) weight."""
    weight_matrix(layer)[mask] = 0
