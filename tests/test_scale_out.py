"""Scale-out and hardening (issue 16): sweeps on Hydra's joblib and submitit launchers give the
serial sweep's records, concurrent jobs do each run once, a kill at the rename leaves a
resumable state, identities do not depend on how a path is spelled, record sets merge with
conflicts reported, and every bad value is refused before anything loads."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA_ROOT, ROOT, TINY
from eval.locks import RecordLock
from eval.pipeline import ConfigError, plan, run
from eval.records import RecordStore

RUN = [sys.executable, str(ROOT / "scripts" / "run.py")]
# a sweep of two methods that share one dense baseline, a few windows, one thread per job
SWEEP = ["method=magnitude,rtn", "eval.max_windows=2", "threads=1", "progress=false"]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COMPBENCH_DATA_ROOT": str(DATA_ROOT),
            "TOKENIZERS_PARALLELISM": "false"}


def _sweep(results: Path, *extra: str) -> subprocess.CompletedProcess:
    out = subprocess.run([*RUN, "-m", *SWEEP, f"paths.results={results}", f"model.path={TINY}", *extra],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _results(results: Path) -> dict[str, dict]:
    return {r["id"]: {k: r[k] for k in ("metrics", "compression", "kind", "identity")} for r in RecordStore(results)}


@pytest.mark.e2e
def test_joblib_and_submitit_sweeps_write_the_serial_sweeps_records(tmp_path):
    # the serial sweep in this process, as Hydra's basic launcher runs its jobs (the CLI's serial
    # multirun itself: test_end_to_end.py's killed sweep)
    from conftest import base_config
    for method in ("magnitude", "rtn"):
        run(base_config(tmp_path / "serial", method=method, **{"eval.max_windows": 2, "threads": 1,
                                                               "model.path": str(TINY)}))
    serial = _results(tmp_path / "serial")
    assert sorted(r["kind"] for r in serial.values()) == ["compressed", "compressed", "dense"]
    _sweep(tmp_path / "joblib", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2")
    assert _results(tmp_path / "joblib") == serial
    _sweep(tmp_path / "submitit", "hydra/launcher=slurm_local")
    assert _results(tmp_path / "submitit") == serial
    assert list((tmp_path / "submitit" / "hydra").glob("multirun-*/.submitit"))   # it went through submitit


@pytest.mark.e2e
def test_two_processes_on_one_config_do_the_work_once(tmp_path):
    results = tmp_path / "results"
    cmd = [*RUN, "method=magnitude", "eval.max_windows=2", "threads=1", "progress=false",
           f"paths.results={results}", f"model.path={TINY}"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    both = "\n".join(logs)
    assert both.count("dense baseline recorded") == 1, both
    assert len(re.findall(r"record [0-9a-f]{16} written$", both, flags=re.M)) == 1, both   # compressed once
    assert sum(("by another job" in log) or ("exists: skipping" in log) for log in logs) == 1, both
    assert len(list(RecordStore(results))) == 2
    assert not list((results / "runs").glob("*.lock"))


KILL_AT_RENAME = r"""
import os, signal, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from conftest import base_config
from eval import records
from eval.pipeline import run
real = os.replace
def replace(src, dst):
    if os.path.basename(str(dst)) != {target!r} + ".json":
        return real(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)      # killed between the complete temp file and the rename
records.os.replace = replace
run(base_config({results!r}, **{over!r}))
"""


@pytest.mark.e2e
def test_sigkill_at_the_rename_leaves_the_old_state_and_the_next_run_resumes(tmp_path, make_config):
    over = {"method": "magnitude", "eval.max_windows": 2, "threads": 1}
    results = tmp_path / "results"
    from conftest import base_config
    p = plan(base_config(results, **over))
    script = KILL_AT_RENAME.format(root=str(ROOT), tests=str(ROOT / "tests"), target=p.rid, results=str(results),
                                   over=over)
    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    store = RecordStore(results)
    assert not store.exists(p.rid) and store.exists(p.dense_rid)         # the old state: dense only
    assert list(store.dir.glob(".partial-*")) and list(store.dir.glob(f"{p.rid}.lock"))   # the dead writer's leftovers
    rec = run(base_config(results, **over))                                # resumes: stale lock and partial go
    assert rec["id"] == p.rid and store.load(p.rid)["kind"] == "compressed"
    assert not list(store.dir.glob(".partial-*")) and not list(store.dir.glob("*.lock"))


@pytest.mark.e2e
def test_a_corrupt_record_of_the_run_itself_is_redone_and_kept_aside(make_config):
    cfg = make_config(method="magnitude", **{"eval.max_windows": 2})
    rec = run(cfg)
    store = RecordStore(cfg["paths"]["results"])
    path = store.path(rec["id"])
    path.write_text(path.read_text()[:100])             # truncated
    again = run(cfg)
    assert again["id"] == rec["id"] and again["metrics"] == rec["metrics"]
    assert store.load(rec["id"])["created"] >= rec["created"]
    assert len(list(store.dir.glob(f"{rec['id']}.json.corrupt-*"))) == 1


# ---- identity ---------------------------------------------------------------------------------
def test_one_model_spelled_three_ways_or_copied_is_one_identity(make_config, tmp_path, monkeypatch):
    absolute = str(TINY.resolve())
    copy = tmp_path / "elsewhere" / "tiny"
    shutil.copytree(absolute, copy)
    ids = set()
    for spelling in ("models/tiny-llama-wt2", "./models/tiny-llama-wt2", absolute, str(copy)):
        ids.add(plan(make_config(method="wanda", **{"model.path": spelling})).rid)
    monkeypatch.chdir(tmp_path)
    ids.add(plan(make_config(method="wanda", **{"model.path": absolute})).rid)
    assert len(ids) == 1
    # ... but other weights are another model
    from safetensors.torch import load_file, save_file
    sd = load_file(str(copy / "model.safetensors"))
    name = next(k for k in sd if k.endswith("down_proj.weight"))
    sd[name] = sd[name] * 1.01
    save_file(sd, str(copy / "model.safetensors"), metadata={"format": "pt"})
    assert plan(make_config(method="wanda", **{"model.path": str(copy)})).rid not in ids


def test_data_files_are_identified_by_content(make_config, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(DATA_ROOT / "wikitext-2-raw", root / "wikitext-2-raw")
    shutil.copytree(DATA_ROOT / "wikitext-2-tokens", root / "wikitext-2-tokens")
    a = plan(make_config(method="wanda"))
    b = plan(make_config(method="wanda", **{"paths.data_root": str(root)}))
    assert a.rid == b.rid
    valid = root / "wikitext-2-tokens" / "valid.txt"
    valid.write_text(valid.read_text() + "one more line\n")
    c = plan(make_config(method="wanda", **{"paths.data_root": str(root)}))
    assert c.dense_rid == a.dense_rid and c.rid != a.rid       # calibration text changed, test text did not


def test_the_thread_count_is_part_of_the_identity_and_scoped_to_the_run(make_config):
    import torch
    before = torch.get_num_threads()
    one, two = plan(make_config(threads=1)), plan(make_config(threads=2))
    assert torch.get_num_threads() == before          # nothing is left to the caller (or the next run)
    assert one.dense_identity["numerics"] == {"device": "cpu", "threads": 1}
    assert two.dense_identity["numerics"] == {"device": "cpu", "threads": 2}
    assert one.rid != two.rid


# ---- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("over, line", [
    ({"method": "gptq", "calib.nsamples": 0}, "calib.nsamples=0 is out of range: it must be an integer >= 1"),
    ({"eval.max_windows": 0}, "eval.max_windows=0 is out of range: it must be an integer >= 1, or null"),
    ({"seed": -1}, "seed=-1 is out of range: it must be an integer >= 0 and <= 4294967295"),
    ({"model.seqlen": 0}, "model.seqlen=0 is out of range: it must be an integer >= 8, or null"),
    ({"engine.batch_size": 0}, "engine.batch_size=0 is out of range: it must be an integer >= 1"),
    ({"method": "gptq", "method.wbits": 0}, "method.wbits=0 is out of range: it must be an integer >= 1 and <= 16"),
    ({"method": "gptq", "method.group_size": 0},
     "method.group_size=0 is out of range: it must be an integer >= 1 (or -1)"),
    ({"method": "sparsegpt", "method.sparsity": 1.5},
     "method.sparsity=1.5 is out of range: it must be a number >= 0 and < 1"),
    ({"train.batch_size": 0}, "train.batch_size=0 is out of range: it must be an integer >= 1"),
    ({"device": "gpu"}, "device='gpu' is out of range: it must be a non-empty string matching cpu|auto|cuda(:\\d+)?"),
    ({"method": "gptq", "method.percdamp": "nan"}, "method.percdamp=nan is not a finite number: give a number"),
    ({"method": "magnitude", "train.lr": "nan"}, "train.lr=nan is not a finite number: give a number"),
    ({"train.warmup_ratio": "inf"}, "train.warmup_ratio=inf is not a finite number: give a number"),
    ({"method": "lora", "method.alpha": "-inf"}, "method.alpha=-inf is not a finite number: give a number"),
    ({"model.name": "../../../x"}, "model.name='../../../x' is out of range: it must be a plain file name "
                                   "(letters, digits and . _ + -, starting with a letter or digit)"),
    ({"model.name": "/tmp/x"}, "model.name='/tmp/x' is out of range: it must be a plain file name "
                               "(letters, digits and . _ + -, starting with a letter or digit)"),
])
def test_every_bad_value_is_refused_before_loading_in_one_line(make_config, monkeypatch, over, line):
    from eval import models
    from eval.tasks.lm import LanguageModelling

    def never(*a, **k):
        raise AssertionError("loaded something before validation")
    monkeypatch.setattr(models, "load", never)
    monkeypatch.setattr(LanguageModelling, "load", never)
    with pytest.raises(ConfigError) as err:
        run(make_config(**over))
    assert str(err.value) == line


def test_a_model_folder_without_safetensors_is_the_same_one_line_error(make_config, tmp_path):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(TINY / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ConfigError) as err:
        plan(make_config(**{"model.path": str(folder)}))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"model.path='{folder}': ") and "no *.safetensors weights" in msg
    assert "pytorch_model.bin" in msg


def test_the_cli_prints_the_one_line_and_fails(tmp_path):
    out = subprocess.run([*RUN, "calib.nsamples=0", "method=gptq", f"paths.results={tmp_path}"], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == ["error: calib.nsamples=0 is out of range: it must be an integer >= 1"]
    assert not list((tmp_path / "runs").glob("*.json"))


def test_the_unknown_model_hint_follows_the_hub_switch(monkeypatch):
    from eval.models import model_family
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="unset HF_HUB_OFFLINE"):
        model_family("no-such-org/no-such-model-xyz")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)     # no network in tests: the lookup fails the same way
    with pytest.raises(FileNotFoundError) as err:
        model_family("no-such-org/no-such-model-xyz")
    assert "HF_HUB_OFFLINE" not in str(err.value) and "hub id" in str(err.value)


# ---- locks ------------------------------------------------------------------------------------
def test_a_lock_of_a_dead_process_is_broken_and_a_live_one_waited_for(tmp_path):
    path = tmp_path / "x.lock"
    proc = subprocess.Popen(["true"])
    proc.wait()
    import socket
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": proc.pid, "since": 0}))
    with RecordLock(path, poll_s=0.05) as lock:        # its owner is gone: broken at once
        assert lock.waited and path.exists()
    assert not path.exists()
    # another node's lock: waited for while its heartbeat is fresh, broken once it is older than stale_after_s
    path.write_text(json.dumps({"host": "other-node", "pid": 1, "since": 0}))
    t0 = time.time()
    with RecordLock(path, poll_s=0.05, stale_after_s=0.5):
        waited = time.time() - t0
    assert 0.4 < waited < 5


# ---- record sets: tables and merge -----------------------------------------------------------
def _published(n: int = 2) -> list[Path]:
    return sorted((ROOT / "results" / "tiny-llama-wt2" / "runs").glob("*.json"))[:n]


def test_the_table_builder_skips_and_names_bad_files_and_reports_conflicts(tmp_path, capsys):
    from tables.build import gather
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "runs").mkdir(parents=True)
    (b / "runs").mkdir(parents=True)
    good, other = _published(2)
    shutil.copy(good, a / "runs")
    bad = {"trunc": good.read_text()[:200], "empty": "", "list": "[1, 2, 3]", "noschema": json.dumps({"id": "x"})}
    for name, text in bad.items():
        (a / "runs" / f"{name}.json").write_text(text)
    rec = json.loads(other.read_text())
    shutil.copy(other, a / "runs")
    rec["metrics"] = {"wikitext2": {**rec["metrics"]["wikitext2"], "ppl": 1.0}}
    (b / "runs" / other.name).write_text(json.dumps(rec))
    found = gather(a, [b])
    err = capsys.readouterr().err
    assert [r["id"] for r in found] == [good.stem]
    for name in bad:
        assert str(a / "runs" / f"{name}.json") in err
    conflict = next(line for line in err.splitlines() if "conflict" in line)
    assert str(a / "runs" / other.name) in conflict and str(b / "runs" / other.name) in conflict


def test_the_published_sets_are_found_from_any_directory(tmp_path, monkeypatch, capsys):
    from tables.build import gather
    monkeypatch.chdir(tmp_path)
    found = gather(tmp_path / "mine", ["results/tiny-llama-wt2"])
    assert len(found) == len(list((ROOT / "results" / "tiny-llama-wt2" / "runs").glob("*.json")))
    gather(tmp_path / "mine", ["results/no-such-set"])
    assert "missing record set" in capsys.readouterr().err


def _compressed_and_dense() -> tuple[Path, Path]:
    runs = ROOT / "results" / "tiny-llama-wt2" / "runs"
    for f in sorted(runs.glob("*.json")):
        rec = json.loads(f.read_text())
        if rec["kind"] == "compressed" and (runs / f"{rec['dense_id']}.json").is_file():
            return f, runs / f"{rec['dense_id']}.json"
    raise AssertionError("no published compressed record with its dense record")


def test_merge_sets_the_outputs_side_of_a_conflict_aside_and_names_a_missing_baseline(tmp_path):
    from tables.build import gather
    from tables.merge import merge
    comp, dense = _compressed_and_dense()
    a, out = tmp_path / "a", tmp_path / "merged"
    for d in (a, out):
        (d / "runs").mkdir(parents=True)
    shutil.copy(comp, out / "runs")                                   # the output already holds one side
    rec = json.loads(comp.read_text())
    rec["headline"] = 123.0
    (a / "runs" / comp.name).write_text(json.dumps(rec))
    (a / "runs" / dense.name).write_text(dense.read_text()[:100])   # a corrupt baseline
    report = merge([a], out)
    assert not (out / "runs" / comp.name).exists() and list((out / "runs").glob(f"{comp.name}.conflict-*"))
    assert any(line.startswith(f"moved {out / 'runs' / comp.name} aside") for line in report.lines())
    assert comp.stem not in {r["id"] for r in gather(out, [])}        # the tables use neither side
    # a compressed record whose baseline is corrupt is merged, and said to be without one
    b = tmp_path / "b"
    (b / "runs").mkdir(parents=True)
    shutil.copy(comp, b / "runs")
    (b / "runs" / dense.name).write_text(dense.read_text()[:100])
    lines = merge([b], tmp_path / "merged-b").lines()
    assert any(f"its dense record {dense.stem} is corrupt" in line and comp.stem in line for line in lines), lines


def test_merge_deduplicates_by_identity_and_reports_conflicts(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "merged"
    first, second, third = _published(3)
    for d, files in ((a, [first, second]), (b, [second, third])):
        (d / "runs").mkdir(parents=True)
        for f in files:
            shutil.copy(f, d / "runs")
    rec = json.loads(third.read_text())
    rec["headline"] = 123.0
    (a / "runs" / third.name).write_text(json.dumps(rec))      # the same run, different results on machine a
    cli = subprocess.run([sys.executable, str(ROOT / "scripts" / "merge.py"), f"inputs=[{a},{b}]", f"out={out}"],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert cli.returncode == 1
    assert not list(tmp_path.glob("*.log"))                     # no empty merge.log where it was started
    assert sorted(p.stem for p in (out / "runs").glob("*.json")) == sorted([first.stem, second.stem])
    assert "1 duplicates merged" in cli.stdout and "1 conflicts" in cli.stdout
    assert str(a / "runs" / third.name) in cli.stderr and str(b / "runs" / third.name) in cli.stderr
    assert json.loads((out / "runs" / second.name).read_text()) == json.loads(second.read_text())
