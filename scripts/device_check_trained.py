"""Device check of the training-based methods on CUDA (the trainer's bf16 autocast):

    pruning        every pruner that declares checks (`smoke`, with the method) on a small
                   BERT, and ZipLM's latency table at BERT-base shapes on the GPU
                                                                  -> device_check_trained.json
    quantization   every quantizer that declares checks: encoder rows on a small BERT,
                   layer-wise ones (MREM, Mr.BiQ) through the sequential engine, decoder rows
                   (PEQA, QLoRA, INT2.1, Wu et al., LLM-QAT) on two blocks of the tiny Llama
                                                                  -> device_check_quantization.json

    python scripts/device_check_trained.py [pruning] [quantization]    # on a machine with a GPU

Files go to $OUT (results/bench/ keeps the committed ones, named for the GPU)."""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def cases(group: str) -> list[tuple[str, dict, Callable]]:
    """Every registered method of `group` (its package under methods/) that declares short checks
    (`Method.smoke`), each case with its check: the sequential engine for a layer-wise method, the
    tiny Llama for one that trains decoders first (`roles`), a small BERT otherwise."""
    from methods.core.base import LayerwiseMethod, registry
    out = []
    for name, cls in sorted(registry().items()):
        smoke = cls.__dict__.get("smoke", ())      # its own checks, not a parent's
        if not smoke or not cls.__module__.startswith(f"methods.{group}."):
            continue
        if issubclass(cls, LayerwiseMethod):
            check = check_engine_method
        elif cls.roles[0] == "decoder":
            check = check_decoder_method
        else:
            check = check_method
        out += [(name, dict(kw), check) for kw in smoke]
    return out


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def check_method(name: str, kw: dict, dev: torch.device) -> dict:
    from methods.core.arch import FAMILIES
    from methods.core.base import TrainingInputs, build
    from methods.core.model_facts import measure
    from methods.training.trainer import TrainConfig, Trainer
    from tiny_encoders import batches, tiny_bert

    fam = FAMILIES["bert"]
    teacher = tiny_bert(dropout=0.0, qa=True).to(dev).requires_grad_(False)
    model = tiny_bert(dropout=0.0, qa=True).to(dev)
    data = batches(3, qa=True)
    trainer = Trainer(TrainConfig(steps=10, batch_size=4, lr=1e-3, warmup_ratio=0.0), dev, progress=False)
    method = build(name, **kw)
    before = measure(model, fam)
    t = time.perf_counter()
    out = method.compress_trained(model, fam, TrainingInputs(
        trainer, lambda e: data, teacher, pretrained=lambda: tiny_bert(qa=True, seed=1).to(dev)), dev)
    _sync(dev)
    rec = method.result(before, measure(out, fam)).to_record(32)
    with torch.no_grad():
        ok = bool(torch.isfinite(out(**{k: v.to(dev) for k, v in data[0].items() if "positions" not in k})
                                 .start_logits).all())
    return {"ok": ok, "seconds": time.perf_counter() - t, "comp_rate": rec["comp_rate"],
            "precision": str(trainer.dtype)}


def check_engine_method(name: str, kw: dict, dev: torch.device) -> dict:
    """A post-training method through the sequential engine on the GPU (a small BERT)."""
    from methods.core.apply import apply_method
    from methods.core.arch import FAMILIES
    from methods.core.base import build
    from methods.core.calibration import InputBatches
    from methods.core.model_facts import measure
    from tiny_encoders import batches, tiny_bert

    fam = FAMILIES["bert"]
    model = tiny_bert(dropout=0.0).to(dev)
    data = [{k: v.to(dev) for k, v in b.items() if k != "labels"} for b in batches(4, size=8)]
    method = build(name, **kw)
    before = measure(model, fam)
    t = time.perf_counter()
    apply_method(method, model, fam, InputBatches(data), dev, progress=False)
    _sync(dev)
    rec = method.result(before, measure(model, fam)).to_record(32)
    with torch.no_grad():
        ok = bool(torch.isfinite(model(**data[0]).logits).all())
    return {"ok": ok, "seconds": time.perf_counter() - t, "comp_rate": rec["comp_rate"],
            "fits_fell": all(f["mse_last_step"] < f["mse_first_step"] for f in method.fits)}


def check_decoder_method(name: str, kw: dict, dev: torch.device) -> dict:
    """A decoder row on the first two blocks of the tiny Llama, through the trainer on the GPU."""
    import copy

    from transformers import AutoModelForCausalLM

    from methods.core.arch import FAMILIES
    from methods.core.base import TrainingInputs, build
    from methods.core.model_facts import measure
    from methods.training.trainer import TrainConfig, Trainer

    fam = FAMILIES["llama"]
    path = os.environ.get("TINY_LLAMA", str(ROOT / "models" / "tiny-llama-wt2"))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.model.layers = model.model.layers[:2]
    model.config.num_hidden_layers = 2
    model.to(dev)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": (ids := torch.randint(0, model.config.vocab_size, (4, 32), generator=g)),
             "labels": ids.clone()} for _ in range(3)]
    method = build(name, **kw)
    before = measure(model, fam)
    teacher = copy.deepcopy(model).requires_grad_(False) if method.uses_teacher else None
    trainer = Trainer(TrainConfig(steps=4, batch_size=4, lr=1e-3, warmup_ratio=0.0), dev, progress=False)
    t = time.perf_counter()
    out = method.compress_trained(model, fam, TrainingInputs(trainer, lambda e: data, teacher), dev)
    _sync(dev)
    rec = method.result(before, measure(out, fam)).to_record(16)
    with torch.no_grad():
        ok = bool(torch.isfinite(out(input_ids=data[0]["input_ids"].to(dev)).logits).all())
    return {"ok": ok, "seconds": time.perf_counter() - t, "comp_rate": rec["comp_rate"],
            "precision": str(trainer.dtype)}


def run_cases(group: str, dev: torch.device, report: dict) -> None:
    for name, kw, check in cases(group):
        try:
            entry = {"method": name, "kw": kw, **check(name, kw, dev)}
        except Exception as err:  # noqa: BLE001 - the report names every failure
            entry = {"method": name, "kw": kw, "ok": False, "error": repr(err), "trace": traceback.format_exc()[-2000:]}
        print(entry, flush=True)
        report["methods"].append(entry)


def main(groups: list[str]) -> None:
    dev = torch.device("cuda")
    out = Path(os.environ.get("OUT", ROOT / "results" / "bench"))
    for group in groups:
        report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "methods": []}
        if group == "pruning":
            from methods.pruning.trained.ziplm import latency_table
            run_cases(group, dev, report)
            t = time.perf_counter()
            att, ffn = latency_table(768, 64, 1, 12, 3072, 1, (32, 128), dev)
            report["ziplm_latency_bert_base_b32_s128"] = {"attention_s_by_heads": att,
                                                           "ffn_s_by_neurons_every_384": ffn[::384],
                                                           "seconds": time.perf_counter() - t}
            (out / "device_check_trained.json").write_text(json.dumps(report, indent=1))
        elif group == "quantization":
            run_cases(group, dev, report)
            (out / "device_check_quantization.json").write_text(json.dumps(report, indent=1))
        else:
            raise SystemExit(f"unknown group '{group}': pruning | quantization")


if __name__ == "__main__":
    main(sys.argv[1:] or ["pruning"])
