"""What a row's runs would take, without running or planning them: GPU memory, the download
(model and datasets) and GPU-hours on a named device, from the row's FLOPs.

    GPU-hours = (F_tensor / (P_bf16 × u) + F_solver / (P_fp32 × u)) / 3600
    F_tensor  = 2·N·(T_calib + T_eval) + 6·N·T_finetune + (6 + 2·teacher)·N·T_train
                [+ 6·N·T_calib: whole-model methods that calibrate by gradients]
    F_solver  = Σ_linears (2·d_in²·T_calib + d_in³ + 2·d_out·d_in²)   [Hessian methods: GPTQ, SparseGPT, ...]

N: the model's parameters; T: tokens (calibration: nsamples × seqlen; evaluation: the test
tokens, dense and compressed; fine-tuning and training: epochs × examples × max_length, or
steps × batch × max_length); d_in, d_out: every block linear's shape. P_bf16, P_fp32 and u (the
fraction of peak a run sustains) are the device's, declared in conf/verify.yaml with the
datasets' sizes; the models' sizes and shapes are their `needs` (conf/model/*.yaml).

The run's settings come from the same config files Hydra composes (conf/config.yaml's defaults,
each group's file, the row's overrides), read directly: composing 140 runs through Hydra and
planning each through eval/pipeline.py (which reaches for the model's config on the Hub) took a
minute; a plan needs neither."""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
FORMULA = ("GPU-hours = (F_tensor / (P_bf16 × u) + F_solver / (P_fp32 × u)) / 3600; "
           "F_tensor = 2·N·(T_calib + T_eval) + 6·N·T_finetune + (6 + 2·teacher)·N·T_train "
           "[+ 6·N·T_calib: gradient methods]; "
           "F_solver = Σ_linears (2·d_in²·T_calib + d_in³ + 2·d_out·d_in²) [Hessian methods]")


@functools.lru_cache(maxsize=None)
def _yaml(path: Path) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(path)) or {}


def verify_conf() -> dict[str, Any]:
    """conf/verify.yaml as declared (the device, the datasets' sizes, the claim tolerances)."""
    return _yaml(CONF_DIR / "verify.yaml")


def run_config(overrides: list[str], resolve: bool = True) -> dict[str, Any]:
    """The run config `overrides` select, as Hydra composes it for scripts/run.py: conf/config.yaml's
    group defaults (or the override's choice), each group's file, the root keys, then the dotted
    overrides, values parsed by Hydra's own override grammar (tests/test_estimate.py holds it
    equal to Hydra's composition for every row's runs). Plain dicts: OmegaConf's nodes cost 30 ms
    a run; `resolve=False` leaves the interpolations (${oc.env:...}) as written."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    root = copy.deepcopy(_yaml(CONF_DIR / "config.yaml"))
    groups = {}
    for entry in root.pop("defaults"):
        if isinstance(entry, dict):
            ((group, choice),) = entry.items()
            groups[group] = choice
    root.pop("hydra", None)
    dotted = []
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        key = o.key_or_group
        if key in groups and not o.is_add():
            groups[key] = o.value()
        else:
            dotted.append((key, o.value()))
    cfg = _merged({g: copy.deepcopy(_yaml(CONF_DIR / g / f"{choice}.yaml")) for g, choice in groups.items()}, root)
    for key, value in dotted:
        *path, last = key.split(".")
        node = cfg
        for part in path:
            node = node.setdefault(part, {})
        node[last] = _merged(node[last], value) if isinstance(value, dict) and isinstance(node.get(last), dict) \
            else value
    return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True) if resolve else cfg


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    for k, v in top.items():
        base[k] = _merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


@dataclass
class MethodFacts:
    """What the estimate needs of a method: from its registered class and preset."""

    calibrated: bool
    hessian: bool
    gradients: bool       # a whole-model method that calibrates by gradients (LLM-Pruner, ...)
    trained: bool
    teacher: bool


@functools.lru_cache(maxsize=None)
def method_facts(preset: str) -> MethodFacts:
    from methods.core import base
    from methods.core.stats import HESSIAN
    knobs = dict(_yaml(CONF_DIR / "method" / f"{preset}.yaml"))
    method = base.build(knobs.pop("name"), **knobs)
    trained = isinstance(method, base.TrainedMethod)
    stats = getattr(method, "stats", frozenset())
    return MethodFacts(calibrated=method.needs_calibration, hessian=HESSIAN in stats,
                       gradients=isinstance(method, base.ModelMethod) and method.needs_calibration and not trained,
                       trained=trained, teacher=trained and method.uses_teacher)


def _linears(needs: dict[str, Any]) -> list[tuple[int, int]]:
    """(d_in, d_out) of every linear of one block: attention (q, k, v, o) and the MLP (gated: gate,
    up, down; plain: up, down)."""
    h, f, kv = needs["hidden"], needs["ffn"], needs.get("kv_hidden", needs["hidden"])
    attn = [(h, h), (h, kv), (h, kv), (h, h)]
    mlp = [(h, f), (h, f), (f, h)] if needs.get("mlp") == "gated" else [(h, f), (f, h)]
    return attn + mlp


@dataclass
class Work:
    """One piece of a run's work, keyed so that work shared between runs (a dense baseline, a
    fine-tuned model) counts once in a total."""

    key: tuple
    what: str
    tensor_flops: float = 0.0
    solver_flops: float = 0.0


@dataclass
class Estimate:
    gpu_memory_gb: float | None = None
    downloads: dict[str, float] = field(default_factory=dict)        # name -> GB
    work: list[Work] = field(default_factory=list)
    offload: bool = False
    unknown: list[str] = field(default_factory=list)                 # what is not declared

    @property
    def download_gb(self) -> float:
        return sum(self.downloads.values())

    def gpu_hours(self, device: dict[str, Any] | None = None) -> float:
        d = device or verify_conf()["device"]
        u = d["utilisation"]
        seconds = sum(w.tensor_flops / (d["bf16_tflops"] * 1e12 * u) + w.solver_flops / (d["fp32_tflops"] * 1e12 * u)
                      for w in self.work)
        return seconds / 3600

    def add(self, other: "Estimate") -> "Estimate":
        """The two together: shared work and downloads once, the larger GPU memory."""
        keys = {w.key for w in self.work}
        mem = [m for m in (self.gpu_memory_gb, other.gpu_memory_gb) if m is not None]
        return Estimate(max(mem) if mem else None, {**self.downloads, **other.downloads},
                        self.work + [w for w in other.work if w.key not in keys], self.offload or other.offload,
                        list(dict.fromkeys(self.unknown + other.unknown)))

    def describe(self, device: dict[str, Any] | None = None, total: bool = False) -> str:
        """One line: GPU memory (a total: the most any row needs), the download and the GPU-hours."""
        d = device or verify_conf()["device"]
        if self.unknown:
            return "needs: not estimated (" + "; ".join(self.unknown) + ")"
        memory = f"GPU memory up to {self.gpu_memory_gb:g} GB" if total else \
            f"GPU memory {self.gpu_memory_gb:g} GB" + (" (engine.offload=true)" if self.offload else "")
        parts = [memory,
                 f"download {round(self.download_gb, 3):g} GB ("
                 + ", ".join(f"{k} {v:g}" for k, v in self.downloads.items()) + ")",
                 f"{self.gpu_hours(d):.3g} GPU-hours on {d['name']}"]
        return "needs: " + ", ".join(parts)


def _dataset_tokens(name: str, facts: dict[str, Any], cfg: dict[str, Any]) -> tuple[float, float]:
    """(training tokens per epoch, evaluation tokens) of an encoder task's data."""
    length = cfg["task"].get("max_length") or 128
    return facts["train_examples"] * length, facts["eval_examples"] * length


def estimate_run(cfg: dict[str, Any], preset: str, model: str) -> Estimate:
    """The estimate of one run (a resolved run config, its preset and model config names)."""
    conf = verify_conf()
    data = conf["datasets"]
    needs = _yaml(CONF_DIR / "model" / f"{model}.yaml").get("needs") or {}
    missing = [k for k in ("params_b", "layers", "hidden", "ffn", "download_gb", "gpu_memory_gb") if k not in needs]
    if missing:
        return Estimate(unknown=[f"conf/model/{model}.yaml needs no {', '.join(missing)}"])
    est = Estimate(gpu_memory_gb=needs["gpu_memory_gb"], downloads={cfg["model"]["name"]: needs["download_gb"]},
                   offload=bool(needs.get("offload")))
    n = needs["params_b"] * 1e9
    facts = method_facts(preset)
    task = cfg["task"]["name"]
    from eval.models import MAX_SEQLEN
    seqlen = cfg["model"].get("seqlen") or min(needs.get("max_positions", MAX_SEQLEN), MAX_SEQLEN)
    run_key = (model, preset, tuple(sorted(map(str, cfg.get("method", {}).items()))), cfg["task"].get("variant", task))
    if task == "lm":
        eval_tokens = 0.0
        for ds in cfg["eval"]["datasets"]:
            if ds == "c4":
                est.downloads["c4 validation"] = data["c4_validation"]["download_gb"]
                eval_tokens += data["c4_validation"]["eval_windows"] * seqlen
            else:
                est.downloads[ds] = data[ds]["download_gb"]
                eval_tokens += data[ds]["test_tokens"]
        dense_key = (model, "dense", seqlen, tuple(cfg["eval"]["datasets"]))
        est.work.append(Work(dense_key, "dense evaluation", 2 * n * eval_tokens))
        if preset == "dense":
            return est
        est.work.append(Work(run_key + ("eval",), "evaluation", 2 * n * eval_tokens))
        train_tokens = 0.0
        if facts.trained:
            text = cfg["task"].get("train_text", {}) or {}
            wt2 = data["wikitext2"]
            per_epoch = wt2["train_tokens"] if text.get("source") == "wikitext2" else wt2["valid_tokens"]
            tr = cfg["train"]
            train_tokens = tr["steps"] * tr["batch_size"] * tr["grad_accum"] * seqlen if tr.get("steps") \
                else tr["epochs"] * per_epoch
            if text.get("source") == "wikitext2":
                est.downloads["wikitext2"] = wt2["download_gb"]
        calib_tokens = 0.0
        if facts.calibrated:
            calib = cfg["calib"]
            calib_tokens = calib["nsamples"] * seqlen
            if calib["source"] == "c4":
                est.downloads["c4 train"] = data["c4_train"]["download_gb"]
            elif calib["source"] == "wikitext2":
                est.downloads["wikitext2"] = data["wikitext2"]["download_gb"]
    else:
        facts_ds = data[task]
        est.downloads[task] = facts_ds["download_gb"]
        train_per_epoch, eval_tokens = _dataset_tokens(task, facts_ds, cfg)
        ft = cfg["finetune"]
        if not cfg["model"].get("finetuned"):
            est.work.append(Work((model, task, "finetune", tuple(sorted(map(str, ft.items())))), "fine-tuning",
                                 6 * n * ft["epochs"] * train_per_epoch))
        est.work.append(Work((model, task, "dense"), "dense evaluation", 2 * n * eval_tokens))
        if preset == "dense":
            return est
        est.work.append(Work(run_key + ("eval",), "evaluation", 2 * n * eval_tokens))
        train_tokens = 0.0
        if facts.trained:
            tr = cfg["train"]
            length = cfg["task"].get("max_length") or 128
            train_tokens = tr["steps"] * tr["batch_size"] * tr["grad_accum"] * length if tr.get("steps") \
                else tr["epochs"] * train_per_epoch
        calib_tokens = 0.0
        if facts.calibrated:   # task batches: a calibration set of nsamples inputs
            calib_tokens = cfg["calib"]["nsamples"] * (cfg["task"].get("max_length") or 128)
    tensor = 2 * n * calib_tokens + (6 + 2 * facts.teacher) * n * train_tokens
    if facts.gradients:
        tensor += 6 * n * calib_tokens
    solver = 0.0
    if facts.hessian:
        solver = needs["layers"] * sum(2 * d_in**2 * calib_tokens + d_in**3 + 2 * d_out * d_in**2
                                       for d_in, d_out in _linears(needs))
    est.work.append(Work(run_key + ("compress",), "compression", tensor, solver))
    return est


def estimate_row(spec: Any) -> Estimate:
    """Every run of a row (tables/rows.RowSpec) together."""
    total = Estimate()
    for task in spec.tasks:
        total = total.add(estimate_run(run_config(spec.run_overrides(task), resolve=False), spec.preset, spec.model))
    return total
