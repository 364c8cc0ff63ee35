"""The method interface, its three kinds, what a method reports, and the registry.

A method is one module under methods/ (any sub-folder) plus one config file under conf/method/,
registered by name with `@register`. Its kind says how the pipeline applies it:

- `LayerwiseMethod`: through the sequential engine, block by block (`compress_block` / `compress`).
- `ModelMethod`: the whole model at once, with calibration data (`compress_model`).
- `TrainedMethod`: given a trainer, the task's training batches and the dense model as teacher.

Every method describes its result as a `CompressionResult` (what it did, what it stored), from
which the pipeline computes the survey's rates, and carries its table metadata (`TableRow`).
"""
from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.calibration import CalibrationData, InputBatches, TokenWindows
from methods.core.model_facts import ModelSize
from methods.core.settings import check_settings, setting_types
from methods.core.stats import LinearStats
from methods.core.suggest import did_you_mean


class Kind(str, Enum):
    """What a compression did to the model (drives rates and table routing)."""

    DENSE = "dense"
    UNSTRUCTURED = "unstructured"
    NM = "n:m"
    STRUCTURED = "structured"
    QUANTIZED = "quantized"
    DISTILLED = "distilled"
    LOW_RANK = "low_rank"
    ADAPTOR = "adaptor"


PRUNING_KINDS = frozenset({Kind.UNSTRUCTURED, Kind.NM, Kind.STRUCTURED})


class RateBasis(str, Enum):
    MEMORY = "memory"   # parameters or stored bits
    FLOPS = "flops"     # encoder FLOPs at a fixed sequence length
    LAYERS = "layers"   # the fraction of the teacher's layers removed (distillation)
    LINEARS = "linears"  # the parameters removed from the factorised linears (low-rank)
    ADAPTOR = "adaptor"  # the adaptor's size relative to the model (LoRA, AdaLoRA)


@dataclass(frozen=True)
class TableRow:
    """How a method appears in one survey table: its label, the survey's reference number, and its
    granularity (structured pruning: L, N, H, …) or uniform/non-uniform flag (quantization)."""

    label: str
    ref: str = ""
    granularity: str | None = None
    uniform: str = ""
    cost: str = "low"
    columns: Mapping[str, Any] = field(default_factory=dict)  # table-specific cells (Table 6: source, matching)


@dataclass
class CompressionResult:
    """What a method did, measured on the model before and after, and what it stores."""

    kind: Kind
    granularity: str
    before: ModelSize
    after: ModelSize
    rate_basis: RateBasis = RateBasis.MEMORY
    stored_bits: float | None = None       # quantized: codes + statistics + anything kept aside
    quantized_weights: int | None = None
    flops_before: int | None = None        # rate_basis FLOPS
    flops_after: int | None = None
    comp_rate: float | None = None         # the method's own rate on `rate_basis` (layers, linears, adaptor)
    nominal_rate: float | None = None      # quantized: the rate as the row's paper counts it (1 - bits / base)
    facts: dict[str, Any] = field(default_factory=dict)

    def rates(self, bit_base: int) -> dict[str, Any]:
        """The survey's rates. Pruning: the zero fraction of the compressed linears (and of the
        whole model); structured: the fraction of parameters removed (or of FLOPs); quantization:
        1 - stored bits / (bit_base x weights) over the linears, and over the model with everything
        else at bit_base (the survey counts decoders against fp16, encoders against fp32); where
        the row's paper counts nominal bits (`nominal_rate`), that is the rate and the full-overhead
        one is kept as `overhead_comp_rate`."""
        b, a = self.before, self.after
        if self.kind == Kind.QUANTIZED:
            stored, weights, params = self.stored_bits, self.quantized_weights, a.params
            full = 1 - stored / (bit_base * weights)
            model = 1 - (stored + bit_base * (params - weights)) / (bit_base * params)
            out = {"comp_rate": full, "model_comp_rate": model, "rate_base_bits": bit_base}
            if self.nominal_rate is not None:  # the paper's count is the table's rate; the overheads stay recorded
                out.update(comp_rate=self.nominal_rate, overhead_comp_rate=full)
            return out
        if self.kind in (Kind.UNSTRUCTURED, Kind.NM):
            return {"comp_rate": a.linear_sparsity, "model_comp_rate": a.model_sparsity}
        if self.kind == Kind.DENSE:
            return {"comp_rate": 0.0, "model_comp_rate": 0.0}
        removed = b.params - a.params
        if self.comp_rate is not None:
            return {"comp_rate": self.comp_rate, "model_comp_rate": removed / b.params,
                    "param_comp_rate": removed / b.params}
        out = {"param_comp_rate": removed / b.params, "model_comp_rate": removed / b.params,
               "comp_rate_no_embeddings": _removed_outside_embeddings(b, a)}
        if self.rate_basis == RateBasis.FLOPS:
            out["comp_rate"] = 1 - self.flops_after / self.flops_before
        else:
            out["comp_rate"] = removed / b.params
        return out

    def to_record(self, bit_base: int) -> dict[str, Any]:
        a = self.after
        out: dict[str, Any] = {
            **self.facts, "kind": self.kind.value, "granularity": self.granularity,
            "rate_basis": self.rate_basis.value, "params_before": self.before.params, "params_after": a.params,
            "embedding_params": self.before.embedding_params, "model_params": a.params,
            "linear_weights": a.linear_weights, "linear_sparsity": a.linear_sparsity,
            "model_sparsity": a.model_sparsity, "per_block_sparsity": a.per_block_sparsity}
        if self.stored_bits is not None:
            out.update(stored_bits=self.stored_bits, quantized_weights=self.quantized_weights)
        if self.flops_before is not None:
            out.update(flops_before=self.flops_before, flops_after=self.flops_after)
        return {**out, **self.rates(bit_base)}


def _removed_outside_embeddings(b: ModelSize, a: ModelSize) -> float | None:
    """The fraction of the non-embedding parameters removed (hidden-dimension pruning shrinks the
    embeddings too; those removals are not counted here)."""
    if not b.embedding_params:
        return None
    rest_before = b.params - b.embedding_params
    return (rest_before - (a.params - a.embedding_params)) / rest_before


# constructor arguments that name a run's table row or document it, and change no number: they
# stay out of the method's identity (they are recorded beside it)
DESCRIPTIVE = frozenset({"preset", "label", "ref", "deviations", "tables", "not_run"})


def _binding(init: Callable) -> Callable:
    """`init`, recording its arguments as bound (defaults applied) in `self._settings`. The
    outermost constructor records first; each `super().__init__` then records the values it was
    actually passed, so a parent's argument holds what the subclass gave it. The signature is read
    at each call: a changed default is the default bound."""

    @functools.wraps(init)
    def wrapper(self, *args: Any, **kwargs: Any) -> None:
        sig = inspect.signature(init)
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        settings = self.__dict__.setdefault("_settings", {})
        for name, value in list(bound.arguments.items())[1:]:
            kind = sig.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                settings.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL:
                settings[name] = value
        init(self, *args, **kwargs)

    wrapper._binds_settings = True  # type: ignore[attr-defined]
    return wrapper


class Method:
    """What every method has: a name, table metadata, checks before work, and its result.

    `accepts` lists the calibration types the method can use (token windows of a causal LM, or
    batches of task inputs with targets); `needs_calibration` whether it needs any.
    `physical`: the compressed model is physically smaller, so its forward speedup is measured;
    `dynamic_speedup`: it computes less without being smaller (token pruning), measured as well.
    `version`: bumped by any change of the algorithm, so that its old records are not reused.
    `smoke`: settings of short checks on a small model (seconds each), run on a GPU by
    scripts/device_check_trained.py; a method without any is not device-checked there.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    accepts: ClassVar[tuple[type, ...]] = (TokenWindows, InputBatches)
    physical: ClassVar[bool] = False
    dynamic_speedup: ClassVar[bool] = False
    rows: ClassVar[Mapping[str, TableRow]] = {}  # table key -> how the method appears there
    smoke: ClassVar[tuple[Mapping[str, Any], ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_binds_settings", False):
            cls.__init__ = _binding(init)  # type: ignore[method-assign]

    def settings(self) -> dict[str, Any]:
        """The constructor arguments as bound, defaults applied."""
        return dict(self.__dict__.get("_settings", {}))

    def identity(self) -> dict[str, Any]:
        """What identifies the method in a run's identity: its name, version and every setting
        that can change a number (spelling, omitted defaults and preset names cannot)."""
        return {"name": self.name, "version": self.version,
                "settings": {k: v for k, v in sorted(self.settings().items()) if k not in DESCRIPTIVE}}

    def table_rows(self) -> dict[str, TableRow]:
        """This configuration's row metadata in every table it declares one for."""
        return {t: row for t in self.rows if (row := self.table_row(t)) is not None}

    @property
    def needs_calibration(self) -> bool:
        return False

    def check_model(self, linears: Mapping[str, nn.Module], family=None) -> None:
        """Raise ValueError if the model's linears cannot take this method (before any work)."""

    def keep_codes(self, keep: bool) -> None:
        """Whether to keep each linear's integer codes for kernels.convert (quantizers keep them;
        the engine's `keep_codes`). A method without codes has nothing to keep."""

    def table_row(self, table: str) -> TableRow | None:
        """This configuration's row metadata in `table` (None: the method declares none there)."""
        return self.rows.get(table)

    @property
    def label(self) -> str:
        """The method's label in any table, else its registered name."""
        return next(iter(self.rows.values())).label if self.rows else self.name

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """Method-specific facts for the run record."""
        return {}


class LayerwiseMethod(Method):
    """Applied by the sequential engine one block at a time (methods/core/engine.py).

    `stats` names the calibration statistics `compress` needs (empty: no calibration data);
    `true_sequential` re-gathers statistics after each group of linears; `plans`: `plan` needs a
    calibration pass before compression; `propagate_compressed=False`: the next block's inputs
    come from the block before compression (AWQ)."""

    stats: ClassVar[frozenset[str]] = frozenset()
    true_sequential: bool = False
    plans: ClassVar[bool] = False
    propagate_compressed: ClassVar[bool] = True

    @property
    def needs_calibration(self) -> bool:
        return bool(self.stats) or self.plans

    def plan(self, session) -> None:
        """Optional pass before compression (e.g. OWL's layer-wise sparsities); see engine.Session."""

    def compress_block(self, session, block_index: int, block: nn.Module, inputs) -> None:
        """Compress one block's linears. Default: gather `stats` (after each true-sequential
        group, or once for the whole block) and call `compress` for each linear."""
        linears = session.family.linears(block)
        groups = session.family.sequential if self.true_sequential else (tuple(linears),)
        for group in groups:
            layers = {name: linears[name] for name in group}
            found = session.gather(block, layers, self.stats, inputs) if self.stats else {}
            for name, layer in layers.items():
                self.compress(block_index, name, layer, found.get(name))

    def compress(self, block_index: int, name: str, layer: nn.Module, stats: LinearStats | None) -> None:
        raise NotImplementedError


class ModelMethod(Method):
    """Works on the whole model at once (gradients, block removal, head/neuron masks)."""

    def compress_model(self, model: nn.Module, family, calib: CalibrationData | None, device: torch.device,
                       batch_size: int = 8) -> nn.Module:
        """Compress `model` (in place, or return a new module)."""
        raise NotImplementedError


@dataclass
class TrainingInputs:
    """What a trained method gets: the shared trainer (methods/training/trainer.py), the task's
    training batches per epoch, the frozen fine-tuned teacher, the task's dev score, and the
    pre-trained (not fine-tuned) model for methods that start from it. `fit` trains through the
    trainer and keeps each fit's cost for the run record."""

    trainer: Any
    data: Callable[[int], list[dict[str, torch.Tensor]]]
    teacher: nn.Module | None
    evaluate: Callable[[nn.Module], float] | None = None
    pretrained: Callable[[], nn.Module] | None = None
    fits: list[Any] = field(default_factory=list)

    def fit(self, model: nn.Module, loss: Callable, teacher: nn.Module | None = None, **kw: Any):
        kw.setdefault("evaluate", self.evaluate)
        kw.setdefault("name", f"fit{len(self.fits)}")
        result = self.trainer.fit(model, self.data, loss, teacher=teacher, **kw)
        self.fits.append(result)
        return result


class TrainedMethod(Method):
    """Compresses with training (distillation, low-rank recovery, adaptors, QAT, gradual pruning).

    `uses_teacher`: the fine-tuned dense model is loaded beside the student, frozen;
    `from_pretrained`: the method starts from the pre-trained model, not the fine-tuned one."""

    uses_teacher: ClassVar[bool] = True
    from_pretrained: ClassVar[bool] = False
    roles: ClassVar[tuple[str, ...]] = ("encoder",)   # the task roles it trains on (decoder: SIMPLE, ZipLM)

    def check_family(self, family, config=None) -> None:
        """Raise ValueError if the method cannot train this model (its family, its HF config),
        before anything loads."""

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        raise NotImplementedError


_REGISTRY: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    def deco(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name '{name}' registered twice ({_REGISTRY[name].__module__}, {cls.__module__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def _import_all() -> None:
    """Import every module under methods/, sub-folders included (recursive discovery)."""
    import methods
    for info in pkgutil.walk_packages(methods.__path__, prefix="methods."):
        importlib.import_module(info.name)


def registry() -> dict[str, type[Method]]:
    _import_all()
    return dict(_REGISTRY)


def _takes(cls: type[Method], knob: str) -> bool:
    """Whether a constructor of `cls` (its own or a parent's) names the argument `knob`."""
    return any(knob in inspect.signature(k.__dict__["__init__"]).parameters
               for k in cls.__mro__ if k is not object and "__init__" in k.__dict__)


def settings_of(cls: type[Method]) -> set[str]:
    """The setting names `cls(...)` accepts (its own constructor's, and its parents' that `**kw`
    passes on)."""
    return set(setting_types(cls))


def build(name: str, **knobs: Any) -> Method:
    """Instantiate the method registered as `name` with its config knobs (the run's `method`)."""
    return build_at("method", name, knobs)


def build_at(where: str, name: str, knobs: dict[str, Any]) -> Method:
    """Instantiate the method registered as `name` with its config knobs, found at `where` in the
    run's config. The knobs are checked against the method's typed settings first
    (methods/core/settings.py). Every preset names itself (`preset`, conf/method/<preset>.yaml);
    a method that does not take the name is built without it, and carries it as `preset`."""
    _import_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name]
    check_settings(cls, knobs, where)
    preset = knobs.get("preset")
    if "preset" in knobs and not _takes(cls, "preset"):
        knobs = {k: v for k, v in knobs.items() if k != "preset"}
    try:
        method = cls(**knobs)
    except TypeError as err:
        known = settings_of(cls)
        unknown = sorted(set(knobs) - known)
        if not unknown:
            raise ValueError(f"method '{name}': {err}") from None
        raise ValueError("; ".join(f"method '{name}' has no setting '{k}'" + did_you_mean(k, known) for k in unknown)
                         + f" (its settings: conf/method/{preset or name}.yaml)") from None
    if preset is not None and not hasattr(method, "preset"):
        method.preset = preset  # type: ignore[attr-defined]
    return method


@torch.no_grad()
def apply_mask(layer: nn.Module, mask: torch.Tensor) -> None:
    """Zero the masked entries of the layer's (out, in) weight."""
    weight_matrix(layer)[mask] = 0
