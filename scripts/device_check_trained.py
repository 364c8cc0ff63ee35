"""Device check of the pruning-while-training methods: every trained pruner on a small BERT
through the shared trainer on CUDA (bf16 autocast), and ZipLM's latency table at BERT-base
shapes on the GPU. Writes $OUT/device_check_trained.json (results/bench/ keeps the H200 one).

    python scripts/device_check_trained.py          # on a machine with a GPU
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

CASES = [("movement", {"rate": 0.8, "interval": 2}), ("movement", {"rate": 0.8, "hard_movement": True, "interval": 2}),
         ("obert", {"rate": 0.8, "fisher_batches": 2, "block_size": 16, "interval": 2}),
         ("obert", {"rate": 0.8, "score": "magnitude", "interval": 2}), ("leap", {"rate": 0.8, "interval": 2}),
         ("cap", {"rate": 0.8, "interval": 2}), ("cap_structured", {"rate": 0.5, "interval": 2}),
         ("bmp", {"rate": 0.5, "interval": 2}), ("snip", {"rate": 0.5, "interval": 2}),
         ("dynabert", {"rate": 0.5, "widths": [1.0, 0.5]}), ("top_drop_ft", {"rate": 0.5}), ("cofi", {"rate": 0.5}),
         ("ebert", {"rate": 0.5}), ("ziplm", {"speedup": 2.0}), ("power_bert", {"rate": 0.5}), ("ltp", {"rate": 0.5})]


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
    torch.cuda.synchronize()
    rec = method.result(before, measure(out, fam)).to_record(32)
    with torch.no_grad():
        ok = bool(torch.isfinite(out(**{k: v.to(dev) for k, v in data[0].items() if "positions" not in k})
                                 .start_logits).all())
    return {"ok": ok, "seconds": time.perf_counter() - t, "comp_rate": rec["comp_rate"],
            "precision": str(trainer.dtype)}


def main() -> None:
    from methods.pruning.trained.ziplm import latency_table

    dev = torch.device("cuda")
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "methods": []}
    for name, kw in CASES:
        try:
            entry = {"method": name, "kw": kw, **check_method(name, kw, dev)}
        except Exception as err:  # noqa: BLE001 - the report names every failure
            entry = {"method": name, "kw": kw, "ok": False, "error": repr(err), "trace": traceback.format_exc()[-2000:]}
        print(entry, flush=True)
        report["methods"].append(entry)
    t = time.perf_counter()
    att, ffn = latency_table(768, 64, 1, 12, 3072, 1, (32, 128), dev)
    report["ziplm_latency_bert_base_b32_s128"] = {"attention_s_by_heads": att, "ffn_s_by_neurons_every_384": ffn[::384],
                                                   "seconds": time.perf_counter() - t}
    out = Path(os.environ.get("OUT", ROOT / "results" / "bench"))
    (out / "device_check_trained.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
