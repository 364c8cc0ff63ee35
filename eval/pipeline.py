"""One run, for every task and every kind of method:

  plan      one pass over every config value (eval/validate.py), then everything else that
            needs no weights (method, task, model family, data files by content)
  lock      one lock per record id (eval/locks.py): concurrent jobs never do a run twice
  load      the model the task scores (a causal LM, or the task's fine-tuned encoder)
  baseline  the dense model is evaluated once per model, task and protocol, then reused
  calibrate the task's calibration data (token windows, or task batches)
  compress  the method, applied by its kind (layer-wise, whole-model, trained)
  evaluate  the task's metrics, and the forward-time speedup of a physically smaller model
  kernels   (kernels.convert=true) the linears swapped for kernel formats, the metric checked
            again on them, and prefill/decode (or forward) time against the dense model
  write     one record, atomically; a run whose valid record exists is skipped, a corrupt one
            is set aside and redone
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import functools
import logging
import random
import shutil
import statistics
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from eval import provenance
from eval.data import DataMissing
from eval.locks import RecordLock
from eval.records import RecordStore, ResultsUnwritable, record_id
from eval.settings import RunSettings
from eval.validate import ConfigError, check
from eval.tasks.base import Evaluation, Loaded, Task, build_task
from methods.core import base as methods_base
from methods.core.apply import apply_method
from methods.core.base import CompressionResult, Kind, Method, TrainedMethod, TrainingInputs
from methods.core.calibration import to_device
from methods.core.model_facts import measure
from methods.core.progress import library_bars
from methods.core import speedup
from methods.training.checkpoints import UnsafeCheckpoint
from methods.training.trainer import TrainConfig, Trainer

log = logging.getLogger("compbench")
# what a run reports as one line (the input, the data, the results folder), never a traceback
USER_ERRORS = (ConfigError, DataMissing, UnsafeCheckpoint, ResultsUnwritable)
DEFAULT_THREADS = torch.get_num_threads()   # torch's own choice for this machine, read at import


@dataclass
class RunPlan:
    cfg: dict[str, Any]             # the resolved config, as the record keeps it
    task: Task
    method: Method
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
    def run(self) -> RunSettings:
        """The run's own settings, typed (eval/settings.py): what the stages read."""
        return self.task.run

    @property
    def is_dense(self) -> bool:
        return self.rid == self.dense_rid


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for but no CUDA device is available; use device=cpu")
    return dev


@contextlib.contextmanager
def thread_count(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count for one run (null: torch's default for this machine), restored
    afterwards, so that one run of a multirun cannot leave its setting to the next or to its
    caller; the count is part of the identity."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads or DEFAULT_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def plan(cfg: dict[str, Any]) -> RunPlan:
    """Check everything that can be checked without loading weights or data; the identity is taken
    under the run's own thread count (it holds it: eval/identity.numerics)."""
    cfg = copy.deepcopy(cfg)
    check(cfg)
    with thread_count(cfg.get("threads")):
        return _plan(cfg)


def _plan(cfg: dict[str, Any]) -> RunPlan:
    mcfg = dict(cfg["method"])
    name = mcfg.pop("name")
    try:
        method = methods_base.build(name, **mcfg)
        task = build_task(cfg)
        if method.needs_calibration:
            task.check_calibration()
        run = task.run
        device = resolve_device(run.device)
        task.prepare()
        if method.needs_calibration and task.calibration_type not in method.accepts:
            raise ValueError(f"method '{name}' calibrates on {' or '.join(t.__name__ for t in method.accepts)}, "
                             f"and task '{task.name}' gives {task.calibration_type.__name__}; "
                             f"pick a {'decoder' if task.role == 'encoder' else 'encoder'} task for it")
        train = TrainConfig.from_dict(run.train) if isinstance(method, TrainedMethod) else None
        if train is not None:
            task.check_training(method)
        method.check_model(task.meta_linears(), task.family)
        method.keep_codes(run.engine.keep_codes or run.convert)
        dense_identity = task.dense_identity(device)
        identity = dense_identity
        if name != "dense":
            identity = {**dense_identity, "method": method.identity(), "seed": run.seed}
            calib = task.calib_identity(method.needs_calibration)
            if calib is not None:
                identity["calib"] = calib
            if train is not None:
                identity["train"] = train.identity()
                if task.training_identity() is not None:
                    identity["train_text"] = task.training_identity()
            identity["kernels"] = {"convert": run.convert}
            if run.convert or method.physical:
                identity["timing"] = task.timing_identity()
    except (ConfigError, DataMissing):
        raise
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from None
    return RunPlan(cfg, task, method, device, identity, dense_identity)


class _Held:
    """The lock a dense run already holds (its own record is the baseline)."""

    def __enter__(self) -> "_Held":
        return self

    def __exit__(self, *exc) -> None:
        pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@torch.inference_mode()
def forward_seconds(*models: torch.nn.Module, batches: list[dict], device: torch.device,
                    repeats: int = 5) -> list[list[float]]:
    """Wall time of every pass of forwards over `batches`, per model: the basis of measured
    speedups (a physically smaller model runs fewer FLOPs; fake-quantized weights are not
    faster). The models are timed interleaved, pass by pass, after one warm-up pass each, so
    that a load change on the machine hits them alike."""
    times: list[list[float]] = [[] for _ in models]
    inputs = [to_device(b, device) for b in batches]
    for m in models:
        m.eval()
        for b in inputs[:1]:
            m(**b)
    for _ in range(repeats):
        for model, out in zip(models, times):
            with provenance.Timer() as t:
                for b in inputs:
                    model(**b)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            out.append(t.seconds)
    return times


def _record(p: RunPlan, identity: dict, rid: str, ev: Evaluation, extra: dict) -> dict[str, Any]:
    """Everything a table, plot or verdict shows of the run, beside its results: the preset it came
    from, its row in each survey table it belongs to (label, reference, granularity, cost), and
    the protocol it ran, whole or not."""
    dense = identity is p.dense_identity
    method = None if dense else p.method
    return {
        "id": rid, "identity": identity, "config": p.cfg, "task": p.task.name, "role": p.task.role,
        "preset": "dense" if dense else p.cfg["method"].get("preset", p.cfg["method"]["name"]),
        "rows": {} if dense else {t: dataclasses.asdict(row) for t, row in method.table_rows().items()},
        "protocol": p.task.protocol(ev, method, isinstance(method, TrainedMethod)),
        "metrics": ev.metrics, "flags": ev.flags, "seed": p.run.seed, "seqlen": p.task.seqlen,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": provenance.versions(), "git_commit": provenance.git_commit(),
        "hardware": provenance.hardware(p.device), **extra,
    }


def _usable_dense(p: RunPlan, store: RecordStore) -> dict[str, Any] | None:
    """The dense record, if one exists that can be reused: valid (a corrupt one is set aside),
    of this schema, and the dense record of this very identity."""
    dense = store.valid(p.dense_rid)
    if dense is not None and dense["kind"] != "dense":
        log.warning("record %s is not the dense baseline of this run: evaluating it again", p.dense_rid)
        store.set_aside(p.dense_rid)
        return None
    return dense


def _dense_baseline(p: RunPlan, store: RecordStore, loaded: Loaded, load_s: float) -> dict[str, Any]:
    """Evaluate and record the dense model (once per model, task and protocol)."""
    before = measure(loaded.model, loaded.family)
    with provenance.PeakMemory(p.device) as mem, provenance.Timer() as t_eval:
        ev = p.task.evaluate(loaded, p.device, "dense")
    # no forward time here: a time alone is no speedup; each compressed run times the dense model
    # beside its own, interleaved, in its own process
    result = CompressionResult(Kind.DENSE, "", before, before)
    record = _record(p, p.dense_identity, p.dense_rid, ev, {
        "kind": "dense", **loaded.record_extra, "headline": ev.headline,
        "compression": result.to_record(p.task.bit_base),
        "timing": {"load_s": load_s, "eval_s": t_eval.seconds},
        "memory": {"eval": mem.report()}})
    store.write(record)
    log.info("dense baseline recorded as %s", p.dense_rid)
    return record


def _training_inputs(p: RunPlan, store: RecordStore, loaded: Loaded) -> TrainingInputs:
    """The shared trainer (checkpoints under results/checkpoints/<run id>, so a killed run
    resumes), the task's training batches per epoch, the frozen teacher and the dev score."""
    tc = TrainConfig.from_dict(p.run.train)
    trainer = Trainer(tc, p.device, store.root / "checkpoints" / p.rid, p.run.progress)
    teacher = copy.deepcopy(loaded.model).eval().requires_grad_(False) if p.method.uses_teacher else None

    @functools.lru_cache(maxsize=1)
    def data(epoch: int) -> list[dict]:
        return p.task.training_data(loaded, tc.batch_size, tc.seed + epoch, tc.max_train_features).batches

    def evaluate(model: torch.nn.Module) -> float:
        return p.task.evaluate(Loaded(model, loaded.tokenizer, loaded.family), p.device, p.method.name).headline

    return TrainingInputs(trainer, data, teacher, evaluate, lambda: p.task.load_pretrained(p.device))


def _training_record(p: RunPlan, training: TrainingInputs) -> dict[str, Any]:
    """The recipe and the cost of every fit (a method may train in stages), with totals."""
    fits = [f.to_record() for f in training.fits]
    flops = [f["flops"] for f in fits if f["flops"]]
    wall = sum(f["wall_s"] for f in fits)
    return {"recipe": p.run.train, "fits": fits, "steps": sum(f["steps"] for f in fits),
            "samples": sum(f["samples"] for f in fits), "tokens": sum(f["tokens"] for f in fits),
            "wall_s": wall, "device_hours": sum(f["device_hours"] for f in fits),
            "flops": sum(flops) if flops else None,
            "peak_fraction": sum(flops) / wall / fits[0]["peak_flops_per_s"] if flops and wall else None,
            "device": provenance.hardware(p.device)["name"]}


def _score(ev: Evaluation) -> Any:
    """The headline metric, or each dataset's perplexity where the task has no single headline."""
    if ev.headline is not None:
        return ev.headline
    return {ds: m["ppl"] for ds, m in ev.metrics.items() if isinstance(m, dict) and "ppl" in m}


def _dtype(model: torch.nn.Module) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def _kernel_check(p: RunPlan, loaded: Loaded, compression: dict, ev: Evaluation, dense: torch.nn.Module | None,
                  batches: list[dict] | None, repeats: int) -> dict[str, Any]:
    """Swap the compressed linears for kernel formats (kernels.convert), score the task again with
    them (the headline must match the fake-quantized one within the kernels' rounding) and time
    the converted model end to end against the dense copy, interleaved, in this process."""
    from kernels import end_to_end
    from kernels.convert import convert
    from kernels.formats import NoKernel
    try:
        conv = convert(loaded.model, {"compression": compression}, p.device)
    except NoKernel as err:
        log.warning("no kernel for this run's format: %s", err)
        return {"format": None, "reason": str(err)}
    except (RuntimeError, ValueError) as err:   # a kernel this device or build lacks: the scores stand
        log.warning("kernels.convert failed: %s", err)
        return {"format": None, "error": repr(err)[:300]}
    out: dict[str, Any] = {**conv.to_record(), "device": provenance.hardware(p.device)["name"],
                           "dtype": _dtype(loaded.model)}
    if not conv.layers:
        return {**out, "reason": "nothing to convert: the compressed model's dense matrices are its format"}
    if conv.no_kernel():
        return {**out, "reason": conv.no_kernel()}
    ev_k = p.task.evaluate(loaded, p.device, f"{p.method.name}+kernels")
    out.update(score=_score(ev_k), score_fake_quant=_score(ev), metrics=ev_k.metrics)
    if dense is None or batches is None:   # offloaded: no dense copy beside the model, no timing
        return {**out, "reason": "not timed: engine.offload keeps no dense copy"}
    timed = end_to_end.interleaved(dense, loaded.model, batches, p.task.role, p.device, repeats)
    return {**out, **timed, "dense_dtype": _dtype(dense)}


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Execute one run described by a resolved config dict; returns its record."""
    t_start = time.perf_counter()
    p = plan(cfg)
    with thread_count(p.run.threads), library_bars(p.run.progress):
        return _run(p, t_start)


def _run(p: RunPlan, t_start: float) -> dict[str, Any]:
    store = RecordStore(p.run.results)
    store.remove_partials()
    force = p.run.force
    done = None if force else store.valid(p.rid)
    if done is not None:
        log.info("record %s exists: skipping (force=true to redo)", p.rid)
        return done
    with RecordLock(store.dir / f"{p.rid}.lock") as lock:
        done = store.valid(p.rid) if not force or lock.waited else None
        if done is not None:              # written by the job that held the lock while we waited
            log.info("record %s was written by another job: skipping", p.rid)
            return done
        return _run_locked(p, store, force, t_start)


@dataclass
class RunInputs:
    """What a compressed run works from besides the model: calibration data, the trainer and its
    data (trained methods), and, for a timed run, the timing inputs and the dense copy that the
    compressed model is timed against."""

    calib: Any
    calib_s: float
    training: TrainingInputs | None
    timing_batches: list[dict] | None
    dense_copy: torch.nn.Module | None


@dataclass
class Compressed:
    """The method's outcome: its typed result, its phases' seconds and peak memory."""

    result: CompressionResult
    timing: dict[str, float]
    memory: dict[str, Any]
    before: Any
    after: Any


def _run_locked(p: RunPlan, store: RecordStore, force: bool, t_start: float) -> dict[str, Any]:
    """The run's stages, in order; a dense run ends with its baseline."""
    seed_everything(p.run.seed)
    offload = p.run.engine.offload  # keep weights on the CPU while compressing
    loaded, load_s = _load(p, offload)
    dense = _baseline(p, store, loaded, load_s, force, offload)
    if p.is_dense:
        return dense
    # a physically smaller model (and, with kernels.convert, the kernel-converted one) is timed
    # against a dense copy, interleaved pass by pass, in this process, on the same inputs; a
    # trained method's frozen teacher is that copy. Offloaded runs keep no second model: no timing.
    timed = "timing" in p.identity and not offload
    inputs = _inputs(p, store, loaded, timed)
    done = _compress(p, loaded, inputs)
    ev, eval_s, eval_memory = _evaluate(p, loaded)
    timing = {"load_s": load_s, "calib_data_s": inputs.calib_s, **done.timing, "eval_s": eval_s}
    extra: dict[str, Any] = {}
    if inputs.training is not None and inputs.training.fits:
        extra["training"] = _training_record(p, inputs.training)
    repeats = p.identity.get("timing", {}).get("repeats", 0)
    if timed and p.method.physical and (done.after.params < done.before.params or p.method.dynamic_speedup):
        extra["speedup"], forward = _forward_speedup(p, inputs, loaded, repeats)
        timing.update(forward)
    if ev.headline is not None and dense.get("headline") is not None:
        extra["delta"] = ev.headline - dense["headline"]
    if p.run.save_dir:
        from eval.models import save_compressed
        extra["saved_model"] = str(save_compressed(loaded.model, loaded.tokenizer, p.run.save_dir))
    if p.identity["kernels"]["convert"]:
        with provenance.Timer() as t_kernels:
            extra["kernels"] = _kernel_check(p, loaded, done.result.to_record(p.task.bit_base), ev, inputs.dense_copy,
                                             inputs.timing_batches, repeats)
        timing["kernels_s"] = t_kernels.seconds
    timing["total_s"] = time.perf_counter() - t_start
    return _write(p, store, loaded, ev, done, extra, timing, eval_memory, inputs.training)


def _load(p: RunPlan, offload: bool) -> tuple[Loaded, float]:
    """The model the task scores (on the CPU when offloading), and the seconds it took."""
    with provenance.Timer() as t_load:
        loaded = p.task.load("cpu" if offload else p.device)
    return loaded, t_load.seconds


def _baseline(p: RunPlan, store: RecordStore, loaded: Loaded, load_s: float, force: bool,
              offload: bool) -> dict[str, Any]:
    """The dense record of this model, task and protocol: reused, or evaluated once by one job."""
    dense = None if p.is_dense and force else _usable_dense(p, store)
    if dense is None:
        # the dense baseline is shared by every run of this model and protocol: one job evaluates it
        with RecordLock(store.dir / f"{p.dense_rid}.lock") if not p.is_dense else _Held():
            # checked again under the lock: another job may have written it since the first look
            dense = None if p.is_dense and force else _usable_dense(p, store)
            if dense is None:
                dense = _dense_baseline(p, store, loaded, load_s)
            else:
                log.info("dense baseline %s was recorded by another job: reusing it", p.dense_rid)
        if offload:
            loaded.model.to("cpu")
    return dense


def _inputs(p: RunPlan, store: RecordStore, loaded: Loaded, timed: bool) -> RunInputs:
    """The timing inputs, the calibration data, the trainer and the dense copy, in that order."""
    method = p.method
    timing_batches = p.task.timing_batches(loaded) if timed else None
    with provenance.Timer() as t_calib:
        calib = p.task.calibration(loaded, p.run.seed) if method.needs_calibration else None
    training = _training_inputs(p, store, loaded) if isinstance(method, TrainedMethod) else None
    dense_copy = None
    if timed:
        dense_copy = training.teacher if training is not None and training.teacher is not None \
            else copy.deepcopy(loaded.model)
    return RunInputs(calib, t_calib.seconds, training, timing_batches, dense_copy)


def _compress(p: RunPlan, loaded: Loaded, inputs: RunInputs) -> Compressed:
    """The method applied by its kind (methods/core/apply.py), its model measured before and after."""
    method, training = p.method, inputs.training
    if training is not None and method.from_pretrained:
        loaded.model = training.pretrained()
    before = measure(loaded.model, loaded.family)
    with provenance.PeakMemory(p.device) as mem, provenance.Timer() as t_comp:
        loaded.model, phases = apply_method(method, loaded.model, loaded.family, inputs.calib, p.device,
                                            p.run.engine.batch_size, p.run.progress, training)
    after = measure(loaded.model, loaded.family)
    return Compressed(method.result(before, after), {**phases, "compress_s": t_comp.seconds}, mem.report(),
                      before, after)


def _evaluate(p: RunPlan, loaded: Loaded) -> tuple[Evaluation, float, dict[str, Any]]:
    """The task's metrics on the compressed model, the seconds and the peak memory they took."""
    with provenance.PeakMemory(p.device) as mem, provenance.Timer() as t_eval:
        ev = p.task.evaluate(loaded, p.device, p.method.name)
    return ev, t_eval.seconds, mem.report()


def _forward_speedup(p: RunPlan, inputs: RunInputs, loaded: Loaded,
                     repeats: int) -> tuple[dict[str, Any], dict[str, float]]:
    """A physically smaller model's forward time against the dense copy's, interleaved pass by
    pass: every pass, the per-pass ratios' median and quartiles (methods/core/speedup.py); and
    the two median forward times for the record's `timing`."""
    batches = inputs.timing_batches
    dense_times, times = forward_seconds(inputs.dense_copy, loaded.model, batches=batches, device=p.device,
                                         repeats=repeats)
    medians = {"dense_forward_s": statistics.median(dense_times), "forward_s": statistics.median(times)}
    return {**speedup.paired(dense_times, times),
            "device": provenance.hardware(p.device)["name"],
            "dtype": _dtype(loaded.model), "dense_dtype": _dtype(inputs.dense_copy),
            "basis": "dense forward time / compressed forward time, same process, interleaved",
            "dense_s": dense_times, "compressed_s": times, "batches": len(batches),
            "tokens": sum(int(b["input_ids"].numel()) for b in batches)}, medians


def _write(p: RunPlan, store: RecordStore, loaded: Loaded, ev: Evaluation, done: Compressed, extra: dict[str, Any],
           timing: dict[str, float], eval_memory: dict[str, Any], training: TrainingInputs | None) -> dict[str, Any]:
    """The compressed run's record, written atomically; a trained run's resume points removed."""
    record = _record(p, p.identity, p.rid, ev, {
        "kind": "compressed", "dense_id": p.dense_rid, **loaded.record_extra, "headline": ev.headline, **extra,
        "compression": done.result.to_record(p.task.bit_base), "timing": timing,
        "memory": {"compress": done.memory, "eval": eval_memory}})
    store.write(record)
    if training is not None:  # the record holds the result: the resume points are spent
        shutil.rmtree(store.root / "checkpoints" / p.rid, ignore_errors=True)
    log.info("record %s written", p.rid)
    return record
