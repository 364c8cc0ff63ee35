"""One encoder run (Tables 2 and 4): fine-tuned task baseline (cached), calibration batches from
the task's training data, compression, task evaluation, one record. The dense baseline of a
(model, task, recipe) is evaluated once and reused."""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from eval import provenance
from eval.data import DataSource
from eval.encoder import (TaskConfig, eval_sets, evaluate, headline, model_inputs, train_examples,
                          training_batches)
from eval.finetune import ensure_finetuned
from eval.models import model_family, resolve_source
from eval.records import RecordStore, record_id
from eval.runner import ConfigError, _record, compression_rates, resolve_device, seed_everything
from methods import base as methods_base
from methods import engine

log = logging.getLogger("compbench")


class EncoderPlan:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = copy.deepcopy(cfg)
        mcfg = dict(cfg["method"])
        name = mcfg.pop("name")
        try:
            self.task = TaskConfig.from_dict(cfg["task"])
            self.method = methods_base.build(name, **mcfg)
            self.device = resolve_device(cfg["device"])
            _, self.family, _ = model_family(cfg["model"].get("finetuned") or cfg["model"]["path"])
            if self.family.name != "bert":
                raise ValueError(f"task '{self.task.name}' needs an encoder (BERT family), "
                                 f"got a '{self.family.name}' model")
            self.method.check_model({}, self.family)
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(str(err)) from None
        self.data = DataSource.from_config(cfg["paths"]["data_root"], cfg.get("offline"))
        self.dense_identity = {"model": cfg["model"], "task": cfg["task"], "finetune": cfg["finetune"],
                               "method": {"name": "dense"}, "device": str(self.device)}
        self.identity = self.dense_identity if name == "dense" else {
            **self.dense_identity, "method": cfg["method"], "seed": cfg["seed"],
            "calib": {"nsamples": cfg["calib"]["nsamples"], "batch_size": cfg["engine"]["batch_size"]}}
        self.rid, self.dense_rid = record_id(self.identity), record_id(self.dense_identity)
        self.seqlen = self.task.max_length


@torch.inference_mode()
def forward_seconds(model, batches: list[dict], device, repeats: int = 3) -> float:
    """Median wall time of one pass of forwards over `batches`: the basis of measured speedups
    (a physically pruned model runs fewer FLOPs; fake-quantized models are not faster)."""
    model.eval()
    times = []
    for _ in range(repeats):
        with provenance.Timer() as t:
            for b in batches:
                model(**{k: v.to(device) for k, v in model_inputs(b).items()})
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        times.append(t.seconds)
    return sorted(times)[len(times) // 2]


def _timing_batches(p: EncoderPlan, tokenizer) -> list[dict]:
    return training_batches(p.task, train_examples(p.task, p.data)[:64], tokenizer, p.task.batch_size, seed=0)


def _evaluate(p: EncoderPlan, model, tokenizer) -> dict[str, Any]:
    sets = eval_sets(p.task, p.data)
    metrics = {name: evaluate(p.task, model, tokenizer, ex, p.device) for name, ex in sets.items()}
    return {p.task.name: {**metrics, "headline": headline(p.task, metrics), "flags": []}}


def run_encoder(cfg: dict[str, Any]) -> dict[str, Any]:
    p = EncoderPlan(cfg)
    store = RecordStore(p.cfg["paths"]["results"])
    store.remove_partials()
    if store.exists(p.rid) and not p.cfg.get("force", False):
        log.info("record %s exists: skipping (force=true to redo)", p.rid)
        return store.load(p.rid)
    seed_everything(p.cfg["seed"])
    mc = p.cfg["model"]
    baseline = mc.get("finetuned") or ensure_finetuned(
        mc["name"], resolve_source(mc["path"]), p.task, p.data, p.cfg["finetune"],
        Path(p.cfg["paths"]["results"]) / "finetuned", p.device)
    source = resolve_source(str(baseline))
    tokenizer = AutoTokenizer.from_pretrained(source)
    kwargs = {} if p.task.is_qa else {"num_labels": p.task.num_labels}
    model = p.task.model_class().from_pretrained(source, use_safetensors=True, **kwargs).to(p.device).eval()
    extra_base = {"baseline": str(baseline), "task_variant": p.task.name}

    if not store.exists(p.dense_rid) or (p.rid == p.dense_rid and p.cfg.get("force", False)):
        with provenance.Timer() as t:
            metrics = _evaluate(p, model, tokenizer)
        params = sum(x.numel() for x in model.parameters())
        store.write(_record(p, p.dense_identity, p.dense_rid, metrics, {
            "kind": "dense", **extra_base, "compression": {"comp_rate": 0.0, "params": params},
            "timing": {"eval_s": t.seconds, "forward_s": forward_seconds(model, _timing_batches(p, tokenizer), p.device)}}))
    if p.rid == p.dense_rid:
        return store.load(p.rid)

    batches = training_batches(p.task, train_examples(p.task, p.data), tokenizer, p.cfg["engine"]["batch_size"],
                               p.cfg["seed"], limit=p.cfg["calib"]["nsamples"])
    params_before = sum(x.numel() for x in model.parameters())
    with provenance.PeakMemory(p.device) as mem, provenance.Timer() as t_comp:
        model, phases = engine.compress(model, p.family, p.method, batches, p.device,
                                        p.cfg["engine"]["batch_size"], p.cfg.get("progress", True))
    with provenance.Timer() as t_eval:
        metrics = _evaluate(p, model, tokenizer)
    dense = store.load(p.dense_rid)
    delta = metrics[p.task.name]["headline"] - dense["metrics"][p.task.name]["headline"]
    summary = p.method.summary()
    info: dict[str, Any] = {"model_params": params_before, **summary}
    if not summary.get("structured") and "stored_bits" not in summary:
        info.update(engine.linear_sparsity(model, p.family))
    record = _record(p, p.identity, p.rid, metrics, {
        "kind": "compressed", "dense_id": p.dense_rid, **extra_base, "delta": delta,
        "compression": {**info, **compression_rates(info, base_bits=32)},
        "timing": {"compress_s": t_comp.seconds, **phases, "eval_s": t_eval.seconds,
                   "forward_s": forward_seconds(model, _timing_batches(p, tokenizer), p.device)},
        "memory": {"compress": mem.report()}})
    store.write(record)
    log.info("record %s written: %s %+.2f", p.rid, p.task.name, delta)
    return record
