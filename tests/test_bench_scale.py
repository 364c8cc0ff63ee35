"""scripts/bench_speed.py at 7B scale, sized down for the CPU: a random-weight Llama of the real
architecture, the compress wall time of each method against its reference procedure's replay,
and the evaluation throughput against one window per forward."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from conftest import ROOT


def _bench():
    spec = importlib.util.spec_from_file_location("bench_speed", ROOT / "scripts" / "bench_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cfg(tmp_path, *over):
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="bench", overrides=[
            "bench.synthetic=llama-7b", "bench.dtype=float32", "bench.nsamples=4", "bench.seqlen=32",
            "engine.batch_size=2", "eval.batch_size=2", f"bench.out={tmp_path}/scale.json", "device=cpu", *over])


@pytest.fixture
def small_llama(monkeypatch):
    """llama-7b's architecture at a CPU's size (the shapes table is the only thing changed)."""
    from eval import models
    monkeypatch.setitem(models.RANDOM_LLAMAS, "llama-7b", (64, 192, 2, 4))


@pytest.mark.e2e
def test_the_scale_bench_times_every_method_against_its_replay_and_the_evaluation(tmp_path, small_llama):
    report = _bench().run(_cfg(tmp_path, "bench.methods=[wanda,awq]", "bench.eval_windows=4",
                               "bench.settings.awq.group_size=32"))
    assert json.loads((tmp_path / "scale.json").read_text()) == report
    assert report["synthetic"] and report["model"] == "llama-7b" and report["reference_solver"] == "replayed"
    assert (report["nsamples"], report["seqlen"]) == (4, 32)
    assert [r["method"] for r in report["results"]] == ["wanda", "awq"]
    for r in report["results"]:
        assert r["reference_s"] > 0 and r["compbench_s"] > 0
        assert r["ratio"] == r["compbench_s"] / r["reference_s"]
        assert r["compbench_peak_bytes"] is None     # peak memory is a GPU figure
    ev = report["evaluation"]
    assert ev["windows"] == 4 and ev["ratio"] == ev["one_window_s"] / ev["compbench_s"]


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["sparsegpt", "wanda", "gptq"])
def test_the_reference_replay_computes_what_the_engine_computes(tmp_path, small_llama, method):
    """The two procedures differ in how they feed the samples, not in what they compute: the same
    weights up to the order of the Hessian's sums."""
    from methods.core import engine
    from methods.core.arch import weight_matrix
    from methods.core.calibration import TokenWindows
    bench = _bench()
    cfg = _cfg(tmp_path)
    device = torch.device("cpu")
    ref, ours = bench._fresh(cfg, device), bench._fresh(cfg, device)
    windows = bench._windows(cfg, ref)
    make_state, solve = bench._solver(method, cfg)
    bench.reference_sequential(ref, windows, make_state, solve, device, bench._method(method, cfg).true_sequential)
    engine.compress(ours.model, ours.family, bench._method(method, cfg), TokenWindows(windows), device, 2,
                    progress=False)
    for block_r, block_o in zip(ref.family.blocks(ref.model), ours.family.blocks(ours.model)):
        for (name, a), b in zip(ref.family.linears(block_r).items(), ours.family.linears(block_o).values()):
            wa, wb = weight_matrix(a), weight_matrix(b)
            assert float((wa - wb).norm() / wb.norm()) < 1e-2, name
            assert float(((wa == 0) != (wb == 0)).float().mean()) < 0.01, name   # a few masks tip on sum order


@pytest.mark.e2e
def test_the_gpu_script_runs_both_parts_and_writes_both_files(tmp_path):
    """scripts/bench_gpu.sh checked on the CPU: the smoke kernel profile and the scale bench on the
    tiny Llama, each part under its own limit, both files written."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "DEVICE": "cpu", "PROFILE": "smoke", "SCALE_MODEL": "bench.synthetic=null", "PY": sys.executable,
           "SCALE_ARGS": "calib.nsamples=4 model.seqlen=64", "EVAL_WINDOWS": "2", "SCALE_METHODS": "wanda",
           "KERNELS_ARGS": "profiles.smoke.formats=[int4-w4-g128] profiles.smoke.e2e_models=[]"}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "bench_gpu.sh"), str(tmp_path)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    kernels = json.loads((tmp_path / "kernels-cpu.json").read_text())
    assert kernels["profile"] == "smoke" and kernels["layers"]
    routed = [e for e in kernels["layers"] if "routes" in e]
    assert routed and all(e["backend"] == min(e["routes"], key=lambda k: e["routes"][k]["seconds"]) for e in routed)
    assert all(r["achieved_fraction"] > 0 and r["max_rel_err"] < 2e-2 for e in routed for r in e["routes"].values())
    scale = json.loads((tmp_path / "scale-cpu.json").read_text())
    assert [r["method"] for r in scale["results"]] == ["wanda"] and scale["evaluation"]["windows"] == 2


@pytest.mark.e2e
def test_the_awq_replay_leaves_every_linear_on_its_grid(tmp_path, small_llama):
    """llm-awq's procedure (not the harness's search: see reference_awq) still ends in
    round-to-nearest codes: at most 2^bits values per (row, group)."""
    from methods.core.arch import weight_matrix
    bench = _bench()
    cfg = _cfg(tmp_path, "bench.settings.awq.group_size=32")
    lm = bench._fresh(cfg, torch.device("cpu"))
    bench.reference_awq(lm, bench._windows(cfg, lm), bench._method("awq", cfg), torch.device("cpu"))
    for block in lm.family.blocks(lm.model):
        for name, layer in lm.family.linears(block).items():
            W = weight_matrix(layer)
            groups = W.reshape(W.shape[0], -1, 32)
            assert max(len(torch.unique(groups[r, g])) for r in range(4) for g in range(groups.shape[1])) <= 16, name
