"""`lm`: a causal LM scored by GPTQ-protocol perplexity on WikiText-2 / C4 (the `eval` group),
plus the optional lm-eval zero-shot suite; calibrated on token windows sampled the GPTQ way."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from eval import data as data_mod
from eval import models
from eval.perplexity import perplexity
from eval.settings import RunSettings, TextSettings
from eval.tasks.base import Evaluation, Loaded, Task, register_task
from methods.core.calibration import InputBatches, TokenWindows

log = logging.getLogger("compbench")
TIMING_WINDOWS = 8  # windows of the first evaluation stream timed per pass (timing.inputs=null)


@register_task("lm")
class LanguageModelling(Task):
    role = "decoder"
    bit_base = 16
    calibration_type = TokenWindows

    def model_class(self):
        from transformers import AutoModelForCausalLM
        return AutoModelForCausalLM

    def __init__(self, run: RunSettings, section: dict[str, Any]):
        super().__init__(run, section)
        text = section.get("train_text")
        self.train_text = TextSettings(**text) if text else None   # task=lm_finetune: what trained methods fit on

    def prepare(self) -> None:
        evs, mc = self.run.eval, self.run.model
        for ds in evs.datasets:
            if ds not in data_mod.EVAL_DATASETS:
                raise ValueError(f"unknown evaluation dataset '{ds}'; known: {', '.join(data_mod.EVAL_DATASETS)}")
        models.resolve_dtype(mc.dtype)
        _, self.family, self.hf_config = models.model_family(mc.path, mc.trust_remote_code, mc.revision)
        if self.family.role != "decoder":
            raise ValueError(f"model '{mc.path}' is an encoder ({self.family.name}): perplexity runs need a "
                             f"causal LM (encoders are scored on MNLI / QQP / SQuAD)")
        self.seqlen = mc.seqlen or models.default_seqlen(self.hf_config)
        zs = evs.zeroshot
        if zs.tasks and self.data.offline and not zs.include_path:
            raise ValueError(f"zero-shot tasks {list(zs.tasks)} need lm-eval to download their datasets, and the Hub "
                             f"is off (offline mode). Run online, or give local task YAMLs via "
                             f"eval.zeroshot.include_path.")

    def check_calibration(self) -> None:
        if self.run.calib.source not in data_mod.CALIB_SOURCES:
            raise ValueError(f"unknown calibration source '{self.run.calib.source}'; "
                             f"known: {', '.join(data_mod.CALIB_SOURCES)}")

    def meta_linears(self) -> dict[str, nn.Module]:
        from transformers import AutoModelForCausalLM
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(self.hf_config)
        return {f"{i}.{n}": m for i, block in enumerate(self.family.blocks(model))
                for n, m in self.family.linears(block).items()}

    def dense_identity(self, device: torch.device) -> dict[str, Any]:
        from eval.identity import numerics
        return {"model": {**self.model_identity(), "seqlen": self.seqlen}, "method": {"name": "dense"},
                "eval": self.run.eval.identity(), "data": self.data_identity(self.data_files()),
                "numerics": numerics(device)}

    def data_files(self) -> dict[str, str]:
        split = {"wikitext2": data_mod.WIKITEXT2_RAW["test"], "c4": data_mod.C4_SHARDS["validation"]}
        return {f"eval.{ds}": split[ds] for ds in self.run.eval.datasets}

    def calib_files(self) -> dict[str, str]:
        out = {}
        for role, c in (("calib", self.run.calib), ("train_text", self.train_text)):
            if c is None:
                continue
            if c.source == "file" and c.path:
                out[role] = c.path
            elif c.source == "wikitext2":
                out[role] = data_mod.WIKITEXT2_RAW["train"]
            elif c.source == "c4":
                out[role] = data_mod.C4_SHARDS["train"]
        return out

    def calib_identity(self, needs_calibration: bool) -> dict[str, Any] | None:
        if not needs_calibration:
            return None
        files = {k: v for k, v in self.calib_files().items() if k == "calib"}
        # the engine's batch of calibration windows changes the accumulated statistics' rounding
        return {**self.run.calib.identity(), "seqlen": self.seqlen,
                "batch_size": self.run.engine.batch_size, "data": self.data_identity(files)}

    def training_identity(self) -> dict[str, Any] | None:
        if self.train_text is None:
            return None
        files = {k: v for k, v in self.calib_files().items() if k == "train_text"}
        return {**self.train_text.identity(with_nsamples="nsamples" in self.section["train_text"]),
                "data": self.data_identity(files)}

    def load(self, device: torch.device | str) -> Loaded:
        mc = self.run.model
        lm = models.load(mc.path, mc.dtype, device, self.seqlen, mc.trust_remote_code, mc.revision)
        return Loaded(lm.model, lm.tokenizer, lm.family)

    def calibration(self, loaded: Loaded, seed: int) -> TokenWindows:
        c = self.run.calib
        return TokenWindows(data_mod.calibration_windows(
            c.source, self.data, loaded.tokenizer, c.nsamples, self.seqlen, seed, path=c.path, join=c.separator))

    def training_windows(self, loaded: Loaded, seed: int) -> TokenWindows:
        """Non-overlapping windows of the training text, shuffled with `seed`: the task's
        `train_text` (task=lm_finetune), else the calibration text (offline: the WikiText-2 valid
        text); C4 (a document per window) draws as many windows as calib.nsamples."""
        c = self.train_text or self.run.calib
        if c.source == "c4":
            return self.calibration(loaded, seed)
        ids = data_mod.calibration_stream(c.source, self.data, loaded.tokenizer, path=c.path, join=c.separator)
        n = ids.numel() // self.seqlen
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return TokenWindows(ids[: n * self.seqlen].view(n, self.seqlen)[order])

    def training_data(self, loaded: Loaded, batch_size: int, seed: int, limit: int | None = None) -> InputBatches:
        """Batches of the training windows with their next-token targets (never the test split)."""
        ids = self.training_windows(loaded, seed).ids
        ids = ids[:limit] if limit else ids
        return InputBatches([{"input_ids": ids[i:i + batch_size], "labels": ids[i:i + batch_size], "use_cache": False}
                             for i in range(0, ids.shape[0], batch_size)])


    def check_training(self, method) -> None:
        if "decoder" not in method.roles:
            raise ValueError(f"task '{self.name}' has no training recipe for '{method.name}': it trains encoders; "
                             f"pick an encoder task (squad, mnli, qqp, squad_dev_split)")
        method.check_family(self.family, self.hf_config)

    default_timing_inputs = TIMING_WINDOWS

    def protocol_name(self) -> str:
        return (f"perplexity of {' and '.join(self.run.eval.datasets)} (GPTQ protocol: non-overlapping "
                f"{self.seqlen}-token windows of the test stream)")

    def shortfalls(self, ev: Evaluation, method, trained: bool) -> list[str]:
        out = []
        evs = self.run.eval
        if evs.max_windows is not None:
            out.append(f"eval.max_windows={evs.max_windows}")
        if evs.zeroshot.tasks and evs.zeroshot.limit is not None:
            out.append(f"eval.zeroshot.limit={evs.zeroshot.limit}")
        return out + super().shortfalls(ev, method, trained)

    def timing_batches(self, loaded: Loaded) -> list[dict[str, torch.Tensor]]:
        ids = data_mod.eval_tokens(self.run.eval.datasets[0], self.data, loaded.tokenizer, self.seqlen)
        n = min(self.timing_identity()["inputs"], ids.numel() // self.seqlen)
        wins = ids[: n * self.seqlen].view(n, self.seqlen)
        bs = self.run.eval.batch_size
        return [{"input_ids": wins[i:i + bs], "use_cache": False} for i in range(0, n, bs)]

    def evaluate(self, loaded: Loaded, device: torch.device, label: str) -> Evaluation:
        evs = self.run.eval
        loaded.model.to(device)
        out: dict[str, Any] = {}
        for ds in evs.datasets:
            ids = data_mod.eval_tokens(ds, self.data, loaded.tokenizer, self.seqlen)
            out[ds] = perplexity(loaded.model, ids, self.seqlen, evs.batch_size, evs.max_windows,
                                 device, progress=self.run.progress, desc=f"{label}:{ds}")
            log.info("%s %s ppl %.4f (%d windows)", label, ds, out[ds]["ppl"], out[ds]["windows"])
        zs = evs.zeroshot
        if zs.tasks:
            from eval.zeroshot import zeroshot
            out["lm_eval"] = zeroshot(loaded.model, loaded.tokenizer, list(zs.tasks), zs.batch_size,
                                      zs.limit, zs.include_path, str(device), self.run.seed)
            log.info("%s lm-eval %s", label, out["lm_eval"])
        return Evaluation(out)
