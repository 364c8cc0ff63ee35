"""The run's own settings, typed: what the pipeline's stages and the tasks read, built once from
the resolved config (Hydra's conf/ applies the defaults; eval/validate.py has checked the
ranges). The method's settings are the method's own (methods/core/settings.py), and the task's
own section is its task's to read (`Task.settings_type`).

Each section's `identity()` is what it contributes to a run's identity: every setting that can
change a number, spelled as the config spells it, so that a record's id is the same whether it
is rebuilt from these classes or from its stored config (tests/test_run_settings.py)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


def _known(cls: type, d: Mapping[str, Any] | None) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in (d or {}).items() if k in names}


@dataclass(frozen=True)
class ModelSettings:
    """`model`: the checkpoint and how it loads."""

    name: str
    path: str
    dtype: str = "float32"
    seqlen: int | None = None            # null: the model's own context length
    trust_remote_code: bool = False
    revision: str | None = None          # pins a hub model
    finetuned: str | None = None         # encoders: a fine-tuned task model to start from

    def identity(self) -> dict[str, Any]:
        """The non-path settings (the source is identified by what it resolves to, eval/identity.py)."""
        return {"name": self.name, "dtype": self.dtype, "seqlen": self.seqlen,
                "trust_remote_code": self.trust_remote_code}


@dataclass(frozen=True)
class TextSettings:
    """`calib` (or an LM task's `train_text`): where token windows are drawn from."""

    source: str                          # c4 | wikitext2 | file
    nsamples: int = 128
    path: str | None = None              # source=file: relative to paths.data_root
    join: str | None = None              # the separator between documents (null: "\n\n")

    @property
    def separator(self) -> str:
        return "\n\n" if self.join is None else self.join

    def identity(self, with_nsamples: bool = True) -> dict[str, Any]:
        """Everything but the path (the file is identified by its content)."""
        out: dict[str, Any] = {"source": self.source}
        if with_nsamples:
            out["nsamples"] = self.nsamples
        if self.join is not None:
            out["join"] = self.join
        return out


@dataclass(frozen=True)
class ZeroShotSettings:
    tasks: tuple[str, ...] = ()
    batch_size: int = 8
    limit: int | None = None
    include_path: str | None = None      # a folder of local lm-eval task YAMLs


@dataclass(frozen=True)
class EvalSettings:
    """`eval`: the decoders' perplexity protocol (and the optional zero-shot suite)."""

    datasets: tuple[str, ...] = ("wikitext2",)
    batch_size: int = 8
    max_windows: int | None = None       # null: every window (the protocol)
    zeroshot: ZeroShotSettings = field(default_factory=ZeroShotSettings)

    def identity(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {**out, "datasets": list(self.datasets), "zeroshot": {**out["zeroshot"], "tasks": list(self.zeroshot.tasks)}}


@dataclass(frozen=True)
class EngineSettings:
    batch_size: int = 8                  # calibration sequences per forward
    offload: bool = False
    keep_codes: bool = True


@dataclass(frozen=True)
class TimingSettings:
    inputs: int | None = None            # null: the task's own count
    repeats: int = 5


@dataclass(frozen=True)
class RunSettings:
    """The whole run's settings but the method's and the task's own section."""

    model: ModelSettings
    seed: int = 0
    device: str = "cpu"
    calib: TextSettings = field(default_factory=lambda: TextSettings("wikitext2"))
    eval: EvalSettings = field(default_factory=EvalSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    timing: TimingSettings = field(default_factory=TimingSettings)
    data_root: str = "data"
    results: str = "results"
    threads: int | None = None
    offline: bool | None = None
    force: bool = False
    progress: bool = True
    save_dir: str | None = None
    convert: bool = False                # kernels.convert
    finetune: Mapping[str, Any] = field(default_factory=dict)   # encoders: eval/finetune.py reads it
    train: Mapping[str, Any] | None = None                      # trained methods: TrainConfig reads it

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "RunSettings":
        ev = dict(cfg.get("eval") or {})
        zs = _known(ZeroShotSettings, ev.pop("zeroshot", None))
        ev = _known(EvalSettings, ev)
        if "datasets" in ev:
            ev["datasets"] = tuple(ev["datasets"])
        paths = cfg.get("paths") or {}
        return cls(
            seed=cfg["seed"], device=cfg.get("device", "cpu"),
            model=ModelSettings(**_known(ModelSettings, cfg["model"])),
            calib=TextSettings(**_known(TextSettings, cfg.get("calib") or {"source": "wikitext2"})),
            eval=EvalSettings(**ev, zeroshot=ZeroShotSettings(**{**zs, "tasks": tuple(zs.get("tasks") or ())})),
            engine=EngineSettings(**_known(EngineSettings, cfg.get("engine"))),
            timing=TimingSettings(**_known(TimingSettings, cfg.get("timing"))),
            data_root=paths.get("data_root", "data"), results=paths.get("results", "results"),
            threads=cfg.get("threads"), offline=cfg.get("offline"), force=bool(cfg.get("force", False)),
            progress=bool(cfg.get("progress", True)), save_dir=cfg.get("save_dir"),
            convert=bool((cfg.get("kernels") or {}).get("convert")),
            finetune=dict(cfg.get("finetune") or {}), train=cfg.get("train"))
