"""What a hostile user tries, refused in one line or survived: stale and half-written locks, two
jobs fine-tuning one baseline, broken input files, a results folder that cannot be written, NaN
in a record, and misspelt choices on the command line (issue 29; planted checkpoints:
test_trainer.py; NaN settings and path names: test_scale_out.py's validation table)."""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import DATA_ROOT, ROOT, TINY
from eval.locks import RecordLock
from eval.pipeline import ConfigError, plan


def _taking(lock: RecordLock) -> threading.Event:
    """Start taking `lock` (and releasing it) in a thread; the event is set once it is done."""
    done = threading.Event()

    def take():
        with lock:
            pass
        done.set()
    threading.Thread(target=take, daemon=True).start()
    return done


def _acquire_within(lock: RecordLock, seconds: float) -> bool:
    """Whether `lock` is acquired (and released) within `seconds`; a lock that hangs fails."""
    return _taking(lock).wait(seconds)


# ---- locks ------------------------------------------------------------------------------------
def test_a_same_host_lock_with_a_live_pid_is_broken_once_its_heartbeat_is_old(tmp_path):
    """A pid reused after a restart is alive, but nobody beats the lock's heartbeat."""
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "since": 0}))
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert _acquire_within(RecordLock(path, poll_s=0.05, stale_after_s=600), 10)
    # a fresh heartbeat of a live owner on this host is waited for
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "since": 0}))
    waiter = _taking(RecordLock(path, poll_s=0.05, stale_after_s=600))
    assert not waiter.wait(1.0)
    path.unlink()                 # its owner finishes: the waiter takes it (and leaves no thread behind)
    assert waiter.wait(10)


@pytest.mark.parametrize("content", ["", "{\"host\": ", "[1]"])
def test_an_empty_or_unreadable_lock_is_broken_at_once(tmp_path, content):
    path = tmp_path / "x.lock"
    path.write_text(content)
    assert _acquire_within(RecordLock(path, poll_s=0.05, stale_after_s=600), 10)
    assert not path.exists()


def test_a_lock_whose_write_fails_leaves_no_lock_file(tmp_path, monkeypatch):
    import eval.locks as locks
    from eval.records import ResultsUnwritable

    class FullDisk:
        @staticmethod
        def dumps(*_a, **_k):
            raise OSError(errno.ENOSPC, "No space left on device")
        dump = dumps
        loads = staticmethod(json.loads)
    monkeypatch.setattr(locks, "json", FullDisk)
    with pytest.raises(ResultsUnwritable) as err:
        RecordLock(tmp_path / "x.lock").acquire()
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []                    # no empty lock for the next run to wait on


def test_a_lock_is_never_seen_empty_while_it_is_being_created(tmp_path, monkeypatch):
    """Its content is written before its name appears (hard link), never after."""
    import eval.locks as locks
    path = tmp_path / "x.lock"
    seen = []
    real_link = os.link

    def watching_link(src, dst):
        if Path(dst) != path:   # os.link is process-wide: another test's thread may link its own lock
            return real_link(src, dst)
        seen.append(path.exists())
        real_link(src, dst)
        seen.append(json.loads(Path(dst).read_text())["pid"] == os.getpid())
    monkeypatch.setattr(locks.os, "link", watching_link)
    with RecordLock(path):
        pass
    assert seen == [False, True]


# ---- the fine-tune cache under two jobs ---------------------------------------------------------
def test_two_jobs_needing_one_fine_tune_train_it_once_into_a_renamed_folder(tmp_path, monkeypatch):
    import eval.finetune as ft

    calls, final = [], {}

    def fake_finetune(model_path, task, recipe, out, device, checkpoints=None):
        calls.append(out)
        assert not final["path"].exists()                   # nobody sees the folder before it is whole
        out.mkdir(parents=True)
        time.sleep(0.5)                                      # the other job arrives meanwhile
        (out / "model.safetensors").write_text("weights")
        (out / ft.DONE).write_text("{}")
    monkeypatch.setattr(ft, "finetune", fake_finetune)

    class Task:
        name = "squad_dev_split"

        class settings:
            pass
    import eval.records
    key = eval.records.record_id({"model": "m", "task": Task.settings.__dict__, "finetune": {"lr": 1}})
    final["path"] = tmp_path / f"tiny-{Task.name}-{key}"
    got = []
    jobs = [threading.Thread(target=lambda: got.append(ft.ensure_finetuned("tiny", "m", Task, {"lr": 1}, tmp_path, "cpu")))
            for _ in range(2)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(30)
    assert len(calls) == 1 and calls[0] != final["path"]       # trained once, into a temporary folder
    assert got == [final["path"], final["path"]] and (final["path"] / ft.DONE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [final["path"].name]   # no lock, no half folder


# ---- input files, checked when planning ---------------------------------------------------------
def test_a_truncated_safetensors_file_is_one_line_when_planning(make_config, tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(TINY, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ConfigError) as err:
        plan(make_config(**{"model.path": str(folder)}))
    msg = str(err.value)
    assert "\n" not in msg and "model.safetensors is not a whole safetensors file" in msg and "truncated" in msg


def test_an_empty_calibration_file_is_one_line_when_planning(make_config, tmp_path):
    from eval.data import DataMissing
    empty = tmp_path / "calib.txt"
    empty.write_text("\n  \n")
    with pytest.raises((ConfigError, DataMissing)) as err:
        plan(make_config(method="wanda", **{"calib.source": "file", "calib.path": str(empty)}))
    assert f"{empty} is empty" in str(err.value) and "\n" not in str(err.value)


# ---- the results folder -------------------------------------------------------------------------
def test_a_full_disk_when_the_record_is_written_is_one_line_and_loses_nothing(tmp_path, monkeypatch):
    import eval.records
    from eval.records import RecordStore, ResultsUnwritable
    store = RecordStore(tmp_path)
    good = json.loads(next((ROOT / "results" / "tiny-llama-wt2" / "runs").glob("*.json")).read_text())
    store.write({k: v for k, v in good.items() if k != "schema"})
    real = eval.records.json.dump

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(eval.records.json, "dump", full)
    with RecordLock(store.dir / "other.lock"):
        with pytest.raises(ResultsUnwritable) as err:
            store.write({k: v for k, v in good.items() if k != "schema"})   # the same record again
    monkeypatch.setattr(eval.records.json, "dump", real)
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in store.dir.iterdir()) == [f"{good['id']}.json"]   # lock gone, record kept
    assert store.load(good["id"]) == good


def test_a_lock_that_cannot_be_removed_does_not_hide_the_error(tmp_path, monkeypatch):
    lock = RecordLock(tmp_path / "x.lock").acquire()
    real_unlink = Path.unlink

    def read_only(self, missing_ok=False):
        if self.name == "x.lock":
            raise OSError(errno.EROFS, "Read-only file system")
        return real_unlink(self, missing_ok=missing_ok)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(RuntimeError, match="the first error"):
        try:
            raise RuntimeError("the first error")
        finally:
            lock.release()


def test_a_record_with_a_nan_literal_is_corrupt_and_named(tmp_path):
    from eval.records import CorruptRecord, read_record
    good = next((ROOT / "results" / "tiny-llama-wt2" / "runs").glob("*.json"))
    text = good.read_text()
    rec = json.loads(text)
    ds = next(iter(rec["metrics"]))
    rec["metrics"][ds]["ppl"] = float("nan")
    bad = tmp_path / good.name
    bad.write_text(json.dumps(rec))                     # json.dumps writes the NaN literal
    with pytest.raises(CorruptRecord) as err:
        read_record(bad)
    assert str(bad) in str(err.value) and "NaN literal" in str(err.value)


# ---- the command line -------------------------------------------------------------------------
RUN = [sys.executable, str(ROOT / "scripts" / "run.py")]


def test_a_misspelt_choice_is_one_line_from_the_cli_before_hydra(tmp_path):
    """The CLI's check before Hydra composes prints its line once, and nothing else (the line of
    an error found when planning: test_scale_out.py's test_the_cli_prints_the_one_line_and_fails)."""
    out = subprocess.run([*RUN, "method=gptqq", f"paths.results={tmp_path}", f"paths.data_root={DATA_ROOT}"],
                         cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "error: unknown method 'gptqq' (did you mean gptq or rptq or gmp?): the choices are the 89 files of conf/method/"]


@pytest.mark.parametrize("args, line", [
    (["method=gptq", "method.actorder=true"],
     "error: method 'gptq' has no setting 'actorder' (did you mean act_order?) (its settings: conf/method/gptq.yaml)"),
    (["method=gptq", "+method.actorder=true"],
     "error: method 'gptq' has no setting 'actorder' (did you mean act_order?) (its settings: conf/method/gptq.yaml)"),
    (["method=rtn", "method.wbits=12"],
     "error: method.wbits=12 is out of range for this quantizer: it must be an integer >= 2 and <= 8"),
])
def test_a_misspelt_setting_or_a_bad_value_is_one_line_with_the_closest_names(make_config, args, line):
    """What the CLI prints as `error: <message>`, in this process: its check before Hydra, then planning."""
    from eval.validate import check_overrides
    with pytest.raises(ConfigError) as err:
        check_overrides(args, ROOT / "conf")
        plan(make_config(**dict(a.split("=", 1) for a in args)))
    assert f"error: {err.value}" == line


# ---- a group size that does not divide the input width --------------------------------------------
def test_a_ragged_last_group_has_its_own_scale_and_is_named_in_the_record():
    import torch
    from methods.core.base import build
    from methods.quantization.quantizer import QuantSpec, quantize_weight
    W = torch.randn(4, 200)
    W[:, 128:] *= 0.01                                        # the last 72 inputs: a much smaller range
    q = quantize_weight(W, QuantSpec(bits=4, granularity="group", group_size=128)).dequantize()
    assert (q[:, 128:] - W[:, 128:]).abs().max() < 0.01 * (W[:, :128].abs().max() / 7)   # not the first group's scale
    rtn = build("rtn", wbits=4, group_size=128)
    rtn.account(0, "mlp.down_proj", 256, 688)
    rtn.account(0, "self_attn.q_proj", 256, 256)
    assert rtn.summary()["ragged_last_group"] == {"layers": 1, "widths": ["688 = 5 x 128 + 48"]}
    assert "ragged_last_group" not in build("rtn", wbits=4, group_size=64).summary()
