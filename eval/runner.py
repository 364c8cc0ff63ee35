"""One run: validate the config, load the model, make sure its dense baseline is recorded,
compress, evaluate, and write one record. A run whose record exists is skipped."""
from __future__ import annotations

import copy
import datetime as dt
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from eval import data as data_mod
from eval import models, provenance
from eval.perplexity import perplexity
from eval.records import RecordStore, record_id
from methods import base as methods_base
from methods import engine

log = logging.getLogger("compbench")


class ConfigError(ValueError):
    """Bad input, reported before any work starts."""


@dataclass
class RunPlan:
    cfg: dict[str, Any]
    method: methods_base.Method
    seqlen: int
    device: torch.device
    identity: dict[str, Any]
    dense_identity: dict[str, Any]

    @property
    def rid(self) -> str:
        return record_id(self.identity)

    @property
    def dense_rid(self) -> str:
        return record_id(self.dense_identity)

    @property
    def data(self) -> data_mod.DataSource:
        paths = self.cfg["paths"]
        return data_mod.DataSource.from_config(paths["data_root"], self.cfg.get("offline"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for but no CUDA device is available; use device=cpu")
    return dev


def plan(cfg: dict[str, Any]) -> RunPlan:
    """Check everything that can be checked without loading weights or data."""
    cfg = copy.deepcopy(cfg)
    mcfg = dict(cfg["method"])
    name = mcfg.pop("name")
    try:
        method = methods_base.build(name, **mcfg)
        for ds in cfg["eval"]["datasets"]:
            if ds not in data_mod.EVAL_DATASETS:
                raise ValueError(f"unknown evaluation dataset '{ds}'; known: {', '.join(data_mod.EVAL_DATASETS)}")
        if method.needs_calibration and cfg["calib"]["source"] not in data_mod.CALIB_SOURCES:
            raise ValueError(f"unknown calibration source '{cfg['calib']['source']}'; "
                             f"known: {', '.join(data_mod.CALIB_SOURCES)}")
        models.resolve_dtype(cfg["model"]["dtype"])
        device = resolve_device(cfg["device"])
        _, family, hf_config = models.model_family(cfg["model"]["path"], cfg["model"].get("trust_remote_code", False))
        if family.name == "bert":
            raise ValueError(f"model '{cfg['model']['path']}' is an encoder: perplexity runs need a causal LM "
                             f"(encoders are scored on MNLI / QQP / SQuAD)")
        seqlen = cfg["model"].get("seqlen") or models.default_seqlen(hf_config)
        method.check_model(_meta_linears(hf_config, family), family)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from None
    zs = (cfg["eval"].get("zeroshot") or {}).get("tasks") or []
    if zs and data_mod.DataSource.from_config(cfg["paths"]["data_root"], cfg.get("offline")).offline \
            and not (cfg["eval"].get("zeroshot") or {}).get("include_path"):
        raise ConfigError(f"zero-shot tasks {zs} need lm-eval to download their datasets, and the Hub is off "
                          f"(offline mode). Run online, or give local task YAMLs via eval.zeroshot.include_path.")

    model_id = {**cfg["model"], "seqlen": seqlen}
    dense_identity = {"model": model_id, "method": {"name": "dense"}, "eval": cfg["eval"], "device": str(device)}
    if name == "dense":
        identity = dense_identity
    else:
        identity = {**dense_identity, "method": cfg["method"], "seed": cfg["seed"]}
        if method.needs_calibration:
            identity["calib"] = {**cfg["calib"], "seqlen": seqlen}
    return RunPlan(cfg, method, seqlen, device, identity, dense_identity)


def _meta_linears(hf_config, family) -> dict[str, torch.nn.Module]:
    """The model's block linears with shapes only (meta device), for method.check_model."""
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    return {f"{i}.{n}": m for i, block in enumerate(family.blocks(model))
            for n, m in family.linears(block).items()}


def evaluate(plan_: RunPlan, lm: models.LoadedModel, label: str) -> dict[str, Any]:
    """Perplexity on every configured dataset, with the whole model on the run's device."""
    ecfg = plan_.cfg["eval"]
    lm.model.to(plan_.device)
    out = {}
    for ds in ecfg["datasets"]:
        ids = data_mod.eval_tokens(ds, plan_.data, lm.tokenizer, plan_.seqlen)
        out[ds] = perplexity(lm.model, ids, plan_.seqlen, ecfg["batch_size"], ecfg.get("max_windows"),
                             plan_.device, progress=plan_.cfg.get("progress", True), desc=f"{label}:{ds}")
        log.info("%s %s ppl %.4f (%d windows)", label, ds, out[ds]["ppl"], out[ds]["windows"])
    zs = ecfg.get("zeroshot") or {}
    if zs.get("tasks"):
        from eval.zeroshot import zeroshot
        out["lm_eval"] = zeroshot(lm.model, lm.tokenizer, zs["tasks"], zs.get("batch_size", 8), zs.get("limit"),
                                  zs.get("include_path"), str(plan_.device), plan_.cfg["seed"])
        log.info("%s lm-eval %s", label, out["lm_eval"])
    return out


def _record(plan_: RunPlan, identity: dict, rid: str, metrics: dict, extra: dict) -> dict[str, Any]:
    flags = sorted({f"{ds}:{f}" for ds, m in metrics.items() for f in m.get("flags", [])})
    return {
        "id": rid, "identity": identity, "config": plan_.cfg, "metrics": metrics, "flags": flags,
        "seed": plan_.cfg["seed"], "seqlen": plan_.seqlen,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": provenance.versions(), "git_commit": provenance.git_commit(),
        "hardware": provenance.hardware(plan_.device), **extra,
    }


def compression_rates(info: dict[str, Any], base_bits: int = 16) -> dict[str, float]:
    """The survey's rates: for quantization 1 - stored bits / (base_bits x weights), counting
    scales, zeros, outliers and codebooks (linears alone, and the whole model with everything
    else at base_bits); the survey's decoder table counts against fp16, its encoder table against
    fp32 (Q8BERT = 0.75). For pruning the fraction of zeroed or removed parameters."""
    if "params_before" in info:  # structured: parameters physically removed
        removed = info["params_before"] - info["params_after"]
        emb = info.get("embedding_params", 0)
        return {"comp_rate": removed / info["params_before"],
                "comp_rate_no_embeddings": removed / (info["params_before"] - emb) if emb else None,
                "model_comp_rate": removed / info["params_before"]}
    if "stored_bits" in info and info.get("quantized_weights"):
        stored, quantized, params = info["stored_bits"], info["quantized_weights"], info["model_params"]
        return {"comp_rate": 1 - stored / (base_bits * quantized),
                "model_comp_rate": 1 - (stored + base_bits * (params - quantized)) / (base_bits * params),
                "rate_base_bits": base_bits}
    return {"comp_rate": info["linear_sparsity"], "model_comp_rate": info["model_sparsity"]}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Execute one run described by a resolved config dict; returns its record."""
    p = plan(cfg)
    store = RecordStore(p.cfg["paths"]["results"])
    store.remove_partials()
    force = p.cfg.get("force", False)
    if store.exists(p.rid) and not force:
        log.info("record %s exists: skipping (force=true to redo)", p.rid)
        return store.load(p.rid)

    seed_everything(p.cfg["seed"])
    t_load = time.perf_counter()
    mc = p.cfg["model"]
    offload = p.cfg["engine"].get("offload", False)  # keep weights on the CPU while compressing
    lm = models.load(mc["path"], mc["dtype"], "cpu" if offload else p.device, p.seqlen,
                     mc.get("trust_remote_code", False))
    t_load = time.perf_counter() - t_load

    if not store.exists(p.dense_rid) or (force and p.rid == p.dense_rid):
        with provenance.PeakMemory(p.device) as mem, provenance.Timer() as t_eval:
            metrics = evaluate(p, lm, "dense")
        sparsity = engine.linear_sparsity(lm.model, lm.family)
        sparsity.update(comp_rate=0.0, model_comp_rate=0.0)
        if offload:
            lm.model.to("cpu")
        dense = _record(p, p.dense_identity, p.dense_rid, metrics, {
            "kind": "dense", "compression": sparsity,
            "timing": {"load_s": t_load, "eval_s": t_eval.seconds},
            "memory": {"eval": mem.report()}})
        store.write(dense)
        log.info("dense baseline recorded as %s", p.dense_rid)
    if p.rid == p.dense_rid:
        return store.load(p.rid)

    calib_cfg = p.cfg["calib"]
    windows = None
    with provenance.Timer() as t_calib:
        if p.method.needs_calibration:
            windows = data_mod.calibration_windows(
                calib_cfg["source"], p.data, lm.tokenizer, calib_cfg["nsamples"], p.seqlen, p.cfg["seed"],
                path=calib_cfg.get("path"), join=calib_cfg.get("join", "\n\n"))
    with provenance.PeakMemory(p.device) as mem_c, provenance.Timer() as t_comp:
        lm.model, phases = engine.compress(lm.model, lm.family, p.method, windows, p.device,
                                           p.cfg["engine"]["batch_size"], p.cfg.get("progress", True))
    with provenance.PeakMemory(p.device) as mem_e, provenance.Timer() as t_eval:
        metrics = evaluate(p, lm, p.method.name)
    compression = {**engine.linear_sparsity(lm.model, lm.family), **p.method.summary()}
    record = _record(p, p.identity, p.rid, metrics, {
        "kind": "compressed", "dense_id": p.dense_rid,
        "compression": {**compression, **compression_rates(compression)},
        "timing": {"load_s": t_load, "calib_data_s": t_calib.seconds, "compress_s": t_comp.seconds,
                   **phases, "eval_s": t_eval.seconds},
        "memory": {"compress": mem_c.report(), "eval": mem_e.report()}})
    if p.cfg.get("save_dir"):
        record["saved_model"] = str(models.save_compressed(lm.model, lm.tokenizer, p.cfg["save_dir"]))
    store.write(record)
    log.info("record %s written", p.rid)
    return record
