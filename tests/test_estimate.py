"""The dry run's estimate (tables/estimate.py): the run settings it reads are the ones Hydra
composes, and a row's GPU-hours follow the stated formula from its model's shapes, its data and
the declared device."""
from __future__ import annotations

import pytest

from conftest import ROOT
from tables.estimate import estimate_row, run_config, verify_conf
from tables.rows import load


def test_the_settings_read_directly_are_hydras_composition_for_every_row():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    runs = {tuple(s.run_overrides(t)) for s in load() for t in s.tasks}
    runs |= {("method=sparsegpt", "method.sparsity='2:4'", "+extra.key=1", "calib.nsamples=16",
              "eval.datasets=[wikitext2,c4]", "engine={offload: true}")}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for overrides in sorted(runs):
            hydra = OmegaConf.to_container(compose(config_name="config", overrides=list(overrides)), resolve=True)
            assert run_config(list(overrides)) == hydra, overrides


def test_a_rows_gpu_hours_follow_the_formula():
    """SparseGPT on LLaMA-7B at 70%: 128 C4 windows of 2048 tokens through the model and the
    OBS solver on every linear; WikiText-2 test evaluated dense and compressed."""
    spec = next(s for s in load("table3") if s.id == "SparseGPT@llama-7b@0.7")
    conf = verify_conf()
    dev, data = conf["device"], conf["datasets"]
    n, layers, h, f = 6.74e9, 32, 4096, 11008
    calib, evaluation = 128 * 2048, data["wikitext2"]["test_tokens"]
    linears = [(h, h)] * 4 + [(h, f), (h, f), (f, h)]
    solver = layers * sum(2 * i**2 * calib + i**3 + 2 * o * i**2 for i, o in linears)
    tensor = 2 * n * calib + 2 * (2 * n * evaluation)
    hours = (tensor / (dev["bf16_tflops"] * 1e12 * dev["utilisation"])
             + solver / (dev["fp32_tflops"] * 1e12 * dev["utilisation"])) / 3600
    est = estimate_row(spec)
    assert est.gpu_hours() == pytest.approx(hours, rel=1e-9)
    assert est.downloads == {"llama-7b": 13.5, "wikitext2": data["wikitext2"]["download_gb"],
                             "c4 train": data["c4_train"]["download_gb"]}
    assert est.gpu_memory_gb == 24 and not est.offload
    # the same model with Wanda: no solver, the same forwards
    wanda = estimate_row(next(s for s in load("table3") if s.id == "Wanda@llama-7b@0.7"))
    assert wanda.gpu_hours() == pytest.approx(tensor / (dev["bf16_tflops"] * 1e12 * dev["utilisation"]) / 3600)


def test_a_trained_encoder_row_counts_its_fine_tune_and_training():
    spec = next(s for s in load("table6") if s.id == "TinyBERT@bert-base@0.5")
    est = estimate_row(spec)
    what = [w.what for w in est.work]
    assert what.count("fine-tuning") == 2 and what.count("compression") == 2     # mnli and qqp
    mnli = verify_conf()["datasets"]["mnli"]
    finetune = next(w for w in est.work if w.what == "fine-tuning" and "mnli" in w.key)
    assert finetune.tensor_flops == pytest.approx(6 * 0.110e9 * 2 * mnli["train_examples"] * 128)
