"""One validation pass over a run's own settings (seed, device, engine, model, calibration,
evaluation, task, training, timing), before anything loads: every value has a typed range, and
the first value out of range stops the run with one line naming the field, the value and what is
allowed. A method's settings are the method's own: their types and ranges are declared on its
constructor and checked when it is built, still before any loading (methods/core/settings.py).
No setting anywhere may be NaN or infinite: every comparison with NaN is false, so a range alone
would let it through."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from methods.core.settings import Int, Num, Range
from methods.core.suggest import did_you_mean


class ConfigError(ValueError):
    """Bad input, reported before any work starts."""


BOOL, STR = Range("bool"), Range("str")
# a name that becomes part of a path under paths.results: never a path itself
FILE_NAME = Range("str", pattern=r"[A-Za-z0-9][A-Za-z0-9._+-]*",
                  what="a plain file name (letters, digits and . _ + -, starting with a letter or digit)")
POSITIVE = Num(0, lo_open=True)

RUN: dict[str, Range] = {
    "seed": Int(0, 2**32 - 1),
    "threads": Int(1, optional=True),
    "device": Range("str", pattern=r"cpu|auto|cuda(:\d+)?"),
    "offline": Range("bool", optional=True),
    "force": BOOL, "progress": BOOL,
    "save_dir": Range("str", optional=True),
    "engine.batch_size": Int(1), "engine.offload": BOOL, "engine.keep_codes": BOOL,
    "kernels.convert": BOOL,
    "paths.data_root": STR, "paths.results": STR,
    "model.name": FILE_NAME, "model.path": STR, "model.dtype": Range("choice", choices=("float32", "float16", "bfloat16")),
    "model.seqlen": Int(8, optional=True), "model.trust_remote_code": BOOL,
    "model.revision": Range("str", optional=True),
    "calib.source": Range("choice", choices=("c4", "wikitext2", "file")), "calib.nsamples": Int(1),
    "eval.datasets": Range("list"), "eval.batch_size": Int(1), "eval.max_windows": Int(1, optional=True),
    "eval.zeroshot.batch_size": Int(1), "eval.zeroshot.limit": Int(1, optional=True),
    "task.max_length": Int(16), "task.doc_stride": Int(1), "task.batch_size": Int(1),
    "task.max_eval_examples": Int(1, optional=True), "task.n_best": Int(1), "task.max_answer_length": Int(1),
    "finetune.seed": Int(0, 2**32 - 1), "finetune.epochs": Num(0, lo_open=True), "finetune.batch_size": Int(1),
    "finetune.lr": POSITIVE, "finetune.warmup_ratio": Num(0, 1), "finetune.weight_decay": Num(0),
    "finetune.max_train_features": Int(1, optional=True),
    "train.steps": Int(1, optional=True), "train.epochs": Num(0, lo_open=True), "train.batch_size": Int(1),
    "train.grad_accum": Int(1), "train.lr": POSITIVE, "train.warmup_ratio": Num(0, 1),
    "train.weight_decay": Num(0), "train.max_grad_norm": Num(0, lo_open=True, optional=True),
    "train.eval_every": Int(0), "train.checkpoint_every": Int(0), "train.seed": Int(0, 2**32 - 1),
    "train.max_train_features": Int(1, optional=True),
    "train.precision": Range("choice", choices=("auto", "fp32", "bf16", "fp16")),
    "timing.inputs": Int(1, optional=True), "timing.repeats": Int(3),
}

def _get(cfg: dict, dotted: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _fail(field: str, value: Any, rng: Range) -> ConfigError:
    return ConfigError(f"{field}={value!r} is out of range: it must be {rng.describe()}")


def _leaves(node: Any, prefix: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, (list, tuple)):
        for i, x in enumerate(node):
            yield from _leaves(x, f"{prefix}.{i}")
    else:
        yield prefix, node


def check_finite(cfg: dict[str, Any]) -> None:
    """No number anywhere in the config is NaN or infinite (`ConfigError` naming the first)."""
    for field, value in _leaves(cfg):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{field}={value!r} is not a finite number: give a number")


def check_values(cfg: dict[str, Any]) -> None:
    """Every known field's value in its range (`ConfigError`, one line, at the first that is not)."""
    check_finite({k: v for k, v in cfg.items() if k != "hydra"})
    for field, rng in RUN.items():
        present, value = _get(cfg, field)
        if present and not rng.ok(value):
            raise _fail(field, value, rng)
    present, ds = _get(cfg, "task.doc_stride")
    if present and ds >= cfg["task"].get("max_length", ds + 1):
        raise ConfigError(f"task.doc_stride={ds} is out of range: it must be below task.max_length "
                          f"({cfg['task']['max_length']})")


def check_model_folder(field: str, path: str) -> None:
    """A local model folder must hold a config and safetensors weights (compbench never unpickles)."""
    from eval.models import resolve_source
    try:
        source = Path(resolve_source(path))
    except FileNotFoundError as err:
        raise ConfigError(f"{field}={path!r}: {err}") from None
    if not source.is_dir():
        return                                  # a hub id: checked when its config is fetched
    if not (source / "config.json").is_file():
        raise ConfigError(f"{field}={path!r}: the folder {source} has no config.json; "
                          f"give a Hugging Face model folder (or a hub id)")
    if not any(source.glob("*.safetensors")):
        other = sorted(p.name for p in source.glob("*.bin")) + sorted(p.name for p in source.glob("*.pt"))
        hint = (f" (it has {', '.join(other[:3])}: convert to safetensors, e.g. "
                f"`AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`)") if other else ""
        raise ConfigError(f"{field}={path!r}: the folder {source} has no *.safetensors weights{hint}; "
                          f"compbench loads safetensors only")
    from safetensors import SafetensorError, safe_open
    for weights in sorted(source.glob("*.safetensors")):
        try:                                    # the header only: a truncated file fails here, not mid-load
            with safe_open(str(weights), framework="pt", device="cpu"):
                pass
        except (SafetensorError, OSError) as err:
            raise ConfigError(f"{field}={path!r}: {weights.name} is not a whole safetensors file ({err}): "
                              f"truncated? copy or save it again") from None


def check(cfg: dict[str, Any]) -> None:
    """The whole pass: values, then the model folders the run will load."""
    check_values(cfg)
    model = cfg.get("model") or {}
    if model.get("path"):
        check_model_folder("model.path", model["path"])
    if model.get("finetuned"):
        check_model_folder("model.finetuned", model["finetuned"])


def check_overrides(args: list[str], conf: Path) -> None:
    """The command line's config choices, before Hydra composes them: an unknown option of a
    config group (`method=gptqq`) or an unknown setting of the chosen option (`method.foo=1`) is
    one line naming the closest names, where Hydra would list every option (98 lines) or hint at
    `+method.foo`. Sweep syntax (`method=a,b`) is checked choice by choice; what this cannot read
    (glob(), range(), interpolations) and settings of options a sweep picks are left to Hydra."""
    from omegaconf import OmegaConf
    given = [(a.startswith("+"), *a.lstrip("+~").split("=", 1)) for a in args if "=" in a and not a.startswith("-")]
    given = [(plus, k, v) for plus, k, v in given if not k.startswith("hydra")]
    chosen: dict[str, list[str]] = {}
    for _, key, value in given:
        if "." in key or "/" in key or not (conf / key).is_dir() or any(c in value for c in "()[]${}"):
            continue
        options = {p.stem for p in (conf / key).glob("*.yaml")}
        chosen[key] = [c.strip() for c in value.split(",") if c.strip()]
        for choice in chosen[key]:
            if choice not in options:
                raise ConfigError(f"unknown {key} '{choice}'{did_you_mean(choice, options)}: the choices are the "
                                  f"{len(options)} files of conf/{key}/")
    top = OmegaConf.to_container(OmegaConf.load(conf / "config.yaml"))
    if "sweep" not in chosen:   # a sweep picks its own options: only the command line's are known
        for entry in top.get("defaults", []):
            if isinstance(entry, dict):
                for group, choice in entry.items():
                    chosen.setdefault(str(group), [str(choice)])
    for plus, key, _ in given:
        group, _, setting = key.partition(".")
        if plus or not setting or group not in chosen or group == "sweep":
            continue
        setting = setting.split(".")[0]
        for choice in chosen[group]:
            known = set(OmegaConf.load(conf / group / f"{choice}.yaml") or {}) | set(top.get(group) or {})
            if setting not in known:
                raise ConfigError(f"{group} '{choice}' has no setting '{setting}'{did_you_mean(setting, known)} "
                                  f"(its settings: conf/{group}/{choice}.yaml)")
