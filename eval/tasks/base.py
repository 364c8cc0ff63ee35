"""The task interface: what a run is scored on, and everything task-specific in its lifecycle.

A task is a small object built from the run's typed settings (eval/settings.py) and its own
config section (conf/task/<name>.yaml). It knows the model class it loads,
the calibration batches it gives methods, how it evaluates (metrics and a headline number), the
identity of its dense baseline, and the bit base that rates count against (16 for decoders, 32
for encoders, as the survey does). Adding a task means one module under eval/tasks/ (registered
with `@register_task`) plus one config file under conf/task/.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from eval.data import DataSource
from eval.settings import RunSettings
from methods.core.arch import Family
from methods.core.calibration import CalibrationData


@dataclass
class Loaded:
    """A model ready for a run, with what the task needs beside it."""

    model: nn.Module
    tokenizer: Any
    family: Family
    record_extra: dict[str, Any] = field(default_factory=dict)  # e.g. the fine-tuned baseline's path


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    headline: float | None = None  # the survey's per-task figure (None: perplexity tables read metrics)

    @property
    def flags(self) -> list[str]:
        return sorted({f"{ds}:{f}" for ds, m in self.metrics.items() if isinstance(m, dict)
                       for f in m.get("flags", [])})


@dataclass(frozen=True)
class Column:
    """Where a task's figure stands in the survey's tables: the column `key` (a survey task's,
    mnli, qqp or squad, or the task's own, which the tables add), its LaTeX `header`, the
    `metric` the figure is, and a `note` said beside every row of the task (an offline variant's
    name). Every record carries its task's column (`protocol.column`)."""

    key: str
    header: str
    metric: str
    note: str = ""


class Task:
    name: ClassVar[str]
    role: ClassVar[str]            # "decoder" | "encoder": which survey tables its records feed
    bit_base: ClassVar[int]        # rates count stored bits against this many bits per weight
    calibration_type: ClassVar[type]
    column: ClassVar[Column | None] = None   # None: the perplexity tables' columns (decoders)

    def __init__(self, run: RunSettings, section: dict[str, Any]):
        self.run = run
        self.section = dict(section)       # its own config section, as given (conf/task/<name>.yaml)
        self.data = DataSource.from_config(run.data_root, run.offline)
        self.family: Family | None = None
        self.seqlen: int = 0

    def model_class(self):
        """The transformers auto class the task's model loads as."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Every check that needs no weights: the model's family fits the task, settings are valid."""
        raise NotImplementedError

    def check_calibration(self) -> None:
        """Raise ValueError if the calibration settings cannot give data (methods that need some)."""

    def meta_linears(self) -> dict[str, nn.Module]:
        """The block linears with shapes only, for `method.check_model` before loading."""
        return {}

    def dense_identity(self, device: torch.device) -> dict[str, Any]:
        """What identifies the dense baseline (its record id is a hash of this)."""
        raise NotImplementedError

    def data_files(self) -> dict[str, str]:
        """The data files the dense baseline reads (evaluation, fine-tuning), by a name for each
        and its standard path under the data root."""
        return {}

    def calib_files(self) -> dict[str, str]:
        """The data files a compressed run reads beside them (calibration, training text)."""
        return {}

    def data_identity(self, files: dict[str, str]) -> dict[str, Any]:
        """Each file by its content hash (offline and absent: `DataMissing` now, before any loading);
        on the Hub, by its dataset name."""
        from eval.identity import data_identity
        return data_identity({name: self.data.local(rel, name) for name, rel in files.items()})

    def model_identity(self) -> dict[str, Any]:
        """The model by its resolved source (see eval/identity.py), plus its non-path settings."""
        from eval.identity import model_identity
        mc = self.run.model
        out = mc.identity()
        out["source"] = model_identity(mc.path, mc.revision)
        if mc.finetuned:
            out["finetuned"] = model_identity(mc.finetuned, mc.revision)
        return out

    def calib_identity(self, needs_calibration: bool) -> dict[str, Any] | None:
        """What identifies a compressed run's calibration data (None: not part of the identity)."""
        raise NotImplementedError

    def load(self, device: torch.device | str) -> Loaded:
        raise NotImplementedError

    def calibration(self, loaded: Loaded, seed: int) -> CalibrationData:
        raise NotImplementedError

    def training_data(self, loaded: Loaded, batch_size: int, seed: int, limit: int | None = None) -> CalibrationData:
        """The data a trained method may fit on: the task's training split, never its test data
        (shuffled with `seed`; `limit` caps the number of sequences or features)."""
        raise NotImplementedError

    def training_identity(self) -> dict[str, Any] | None:
        """What identifies the training data when the task names it apart from its other settings."""
        return None

    def check_training(self, method) -> None:
        """Raise ValueError if `method` (a trained one) cannot train on this task."""
        raise ValueError(f"task '{self.name}' has no training recipe for '{method.name}'; "
                         f"training-based methods run on encoder tasks")

    def load_pretrained(self, device: torch.device | str) -> nn.Module:
        """The pre-trained model with a fresh task head (methods that start before fine-tuning)."""
        raise NotImplementedError(f"task '{self.name}' has no pre-trained starting point")

    def timing_batches(self, loaded: Loaded) -> list[dict[str, torch.Tensor]]:
        """Fixed model inputs on which forward time is measured (dense vs compressed): the first
        `timing_identity()["inputs"]` of the task's own."""
        raise NotImplementedError

    default_timing_inputs: ClassVar[int]   # examples (encoders) or windows (decoders) timed per pass

    def timing_identity(self) -> dict[str, Any]:
        """The timing settings as bound (`timing.inputs` null: the task's own count)."""
        t = self.run.timing
        return {"inputs": t.inputs or self.default_timing_inputs, "repeats": int(t.repeats)}

    # the protocol's calibration: 128 samples (GPTQ's 128 windows; the encoders' calibration budget)
    protocol_calib_samples: ClassVar[int] = 128

    def protocol_name(self) -> str:
        """What the protocol measures, in words (the record's `protocol.name`)."""
        raise NotImplementedError

    def shortfalls(self, ev: Evaluation, method, trained: bool) -> list[str]:
        """Where this run did less than its protocol (a prefix of the evaluation data, a test-sized
        calibration or training split), each as the setting that did it; empty: the whole protocol."""
        out = []
        nsamples = self.run.calib.nsamples
        if method is not None and method.needs_calibration and nsamples < self.protocol_calib_samples:
            out.append(f"calib.nsamples={nsamples} < {self.protocol_calib_samples}")
        cap = (self.run.train or {}).get("max_train_features")
        if trained and cap is not None:
            out.append(f"train.max_train_features={cap}")
        return out

    def protocol(self, ev: Evaluation, method=None, trained: bool = False) -> dict[str, Any]:
        """The record's `protocol`: its name, whether the run ran all of it, and where it did not."""
        partial = self.shortfalls(ev, method, trained)
        return {"name": self.protocol_name(), "complete": not partial, "partial": partial,
                "column": dataclasses.asdict(self.column) if self.column else None}

    def evaluate(self, loaded: Loaded, device: torch.device, label: str) -> Evaluation:
        raise NotImplementedError


_TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    def deco(cls: type[Task]) -> type[Task]:
        cls.name = name
        _TASKS[name] = cls
        return cls
    return deco


def _import_all() -> None:
    import eval.tasks
    for info in pkgutil.iter_modules(eval.tasks.__path__):
        importlib.import_module(f"eval.tasks.{info.name}")


def task_names() -> list[str]:
    _import_all()
    return sorted(_TASKS)


def build_task(cfg: dict[str, Any]) -> Task:
    """The task the resolved run config names, given the run's typed settings and its section."""
    _import_all()
    name = cfg["task"]["name"]
    if name not in _TASKS:
        raise ValueError(f"unknown task '{name}'; known: {', '.join(sorted(_TASKS))}")
    return _TASKS[name](RunSettings.from_config(cfg), cfg["task"])
