"""The kernel benchmark: every format of kernels/formats/ timed against the dense matmul of the
same shape, dtype and tokens, in this process, with the device's measured ceilings; then the
models under test end to end, dense against kernel-converted.

Per layer (random weights, real shapes: the models under test, Llama-7B/13B/70B, OPT-66B/175B):
decode steps (1..16 tokens) are bound by the weight bytes, so their achieved fraction is weight
bytes/s over the measured copy bandwidth; prefill (512..4096 tokens) is bound by FLOPs, so its
fraction is the FLOPs the format computes per second over the measured dense matmul peak (2:4
computes half the products: its ceiling is 2× dense). Each case's output is checked against its
dequantized fp32 weight first. End to end: prefill latency and greedy decode tokens/s (decoders)
or the forward time of a batch (encoders), for each format the published records use.

    python scripts/bench_kernels.py [profile=cpu|gpu|smoke] [device=cuda] [out=FILE]
Writes results/bench/kernels-<device>.json.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from eval import provenance  # noqa: E402
from eval.models import random_llama, resolve_source  # noqa: E402
from kernels import end_to_end  # noqa: E402
from kernels.convert import convert  # noqa: E402
from kernels.formats import NoKernel, format_for, parse  # noqa: E402
from kernels.shapes import LARGE  # noqa: E402
from methods.core.arch import family_of, weight_matrix  # noqa: E402
from methods.core.hardware import copy_bandwidth, matmul_peak, seconds  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def device_slug(device: torch.device) -> str:
    """'cpu', or the GPU's name: 'nvidia-h200'."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def environment(device: torch.device) -> dict[str, Any]:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {"device": provenance.hardware(device)["name"], "device_type": device.type, "slug": device_slug(device),
            "hardware": provenance.hardware(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "triton": triton_version, "git_commit": provenance.git_commit(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30))


def model_shapes(path: str) -> list[tuple[int, int]]:
    """The distinct shapes of the compressible linears of one block of the model at `path`."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(resolve_source(path))
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    family = family_of(config.model_type)
    try:
        blocks = family.blocks(model)
    except ValueError:   # a bare AutoModel lacks the task wrapper's prefix (model.layers -> layers)
        blocks = next(m for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList))
    shapes = [tuple(weight_matrix(m).shape) for m in family.linears(blocks[0]).values()]
    return list(dict.fromkeys(shapes))


def shape_sets(names: list[str], models: dict) -> dict[str, list[tuple[int, int]]]:
    out = {}
    for name in names:
        if name in LARGE:
            out[name] = LARGE[name]
        elif name in models:
            out[name] = model_shapes(models[name]["path"])
        else:
            raise ValueError(f"unknown shape set '{name}': {sorted(LARGE)} or a model under `models`")
    return out


def format_dtype(key: str, prof: DictConfig) -> str:
    """The activation dtype a format runs with: its own where it has one (CSR: fp32, MKL's and
    cuSPARSE's common dtype), else the profile's `act_dtype`."""
    try:
        return parse(key).activation_dtype or prof.act_dtype
    except ValueError:   # an unknown key: its case records the error
        return prof.act_dtype


def needs_cuda(key: str) -> bool:
    try:
        return parse(key).needs_cuda
    except ValueError:   # an unknown key: its entry records the error
        return False


def layer_cases(prof: DictConfig, models: dict, device: torch.device, ceilings: dict) -> list[dict]:
    """Every (shape, tokens, format) against dense in each dtype: same process, same inputs."""
    out = []
    tokens = list(prof.decode_tokens) + list(prof.prefill_tokens)
    dense_dtypes = list(dict.fromkeys([*prof.dense_dtypes, *(format_dtype(k, prof) for k in prof.formats)]))
    deadline = time.monotonic() + 60 * prof.get("max_layer_minutes", 1e9)
    for set_name, shapes in shape_sets(list(prof.shapes), models).items():
        for n, k in shapes:
            if time.monotonic() > deadline:   # the end-to-end part still runs; the file says what was cut
                out.append({"set": set_name, "shape": [n, k], "skipped": "max_layer_minutes reached"})
                print(f"{set_name} {[n, k]}: skipped (max_layer_minutes)", flush=True)
                continue
            torch.manual_seed(0)
            W = torch.randn(n, k, device=device) * 0.02
            built: dict[str, Any] = {}
            for key in prof.formats:
                try:
                    built[key] = parse(key).case(W, DTYPES[format_dtype(key, prof)])
                except Exception as err:  # noqa: BLE001 - a format this device or build lacks is recorded
                    built[key] = err
            for m in tokens:
                bound = "bandwidth" if m <= 16 else "flops"
                base = {"set": set_name, "shape": [n, k], "tokens": m, "bound": bound}
                xs, dense_s = {}, {}
                for dname in dense_dtypes:
                    dtype = DTYPES[dname]
                    xs[dname] = x = torch.randn(m, k, device=device, generator=None).to(dtype)
                    w_dense = W.to(dtype)
                    dense_s[dname] = t = seconds(lambda: torch.nn.functional.linear(x, w_dense), prof.min_run_time)
                    frac = (n * k * dtype.itemsize / t / ceilings["copy_bytes_per_s"] if bound == "bandwidth"
                            else 2 * m * n * k / t / ceilings["matmul_flops"][dname])
                    out.append({**base, "dtype": dname, "format": "dense", "backend": "F.linear", "seconds": t,
                                "speedup": 1.0, "achieved_fraction": frac})
                    _print(out[-1])
                for key, case in built.items():
                    dname = format_dtype(key, prof)
                    entry = {**base, "dtype": dname, "format": key}
                    if isinstance(case, Exception):
                        entry["error"] = repr(case)[:300]
                        out.append(entry)
                        _print(entry)
                        continue
                    x = xs[dname]
                    try:
                        want = case.expected(x) if case.expected else x.float() @ case.reference.t()
                        routes = case.routes or {case.backend: (case.fn, case.weight_bytes)}
                        errs = {name: rel_err(fn(x), want) for name, (fn, _) in routes.items()}
                        times = {name: seconds(lambda fn=fn: fn(x), prof.min_run_time)
                                 for name, (fn, _) in routes.items()}
                        ran = min(times, key=times.get)    # routing by shape: the fastest kernel here
                        t, nbytes, err = times[ran], routes[ran][1], errs[ran]
                        peak = ceilings["matmul_flops"][case.peak or dname]

                        def fraction(seconds_: float, bytes_: int) -> float:
                            return (bytes_ / seconds_ / ceilings["copy_bytes_per_s"] if bound == "bandwidth"
                                    else case.flops_per_token * m / seconds_ / peak)
                        achieved = fraction(t, nbytes)
                        entry.update(backend=ran, seconds=t, speedup=dense_s[dname] / t,
                                     speedup_vs={d: s / t for d, s in dense_s.items()},
                                     ideal_speedup=case.ideal[bound], achieved_fraction=achieved,
                                     weight_bytes=nbytes, max_rel_err=err,
                                     ok=all(e < TOL[DTYPES[dname]] for e in errs.values()))
                        if len(routes) > 1:
                            entry["routes"] = {name: {"seconds": times[name], "speedup": dense_s[dname] / times[name],
                                                      "achieved_fraction": fraction(times[name], routes[name][1]),
                                                      "max_rel_err": errs[name]} for name in routes}
                    except Exception as err:  # noqa: BLE001
                        entry.update(error=repr(err)[:300], trace=traceback.format_exc()[-500:])
                    out.append(entry)
                    _print(entry)
    return out


def _print(e: dict) -> None:
    if "error" in e:
        print(f"{e['set']:>15} {str(e['shape']):>14} m={e['tokens']:<5} {e['dtype']:<9} {e['format']:<15} "
              f"n/a: {e['error'][:90]}", flush=True)
        return
    flag = "" if e.get("ok", True) else "  WRONG OUTPUT"
    print(f"{e['set']:>15} {str(e['shape']):>14} m={e['tokens']:<5} {e['dtype']:<9} {e['format']:<15} "
          f"{e['seconds'] * 1e6:10.1f} us  x{e['speedup']:.2f}  {e['achieved_fraction']:.2f} of {e['bound']}{flag}",
          flush=True)


def record_formats(dirs: list[str]) -> dict[str, set[str]]:
    """The formats each model's published records produced (what the tables need a figure for)."""
    from tables.collect import collect
    found: dict[str, set[str]] = {}
    records = collect(dirs)
    for line in records.report():
        print(f"warning: {line}", flush=True)
    for rec in records.records.values():
        if rec.get("kind") != "compressed":
            continue
        try:
            fmt = format_for(rec)
        except NoKernel:
            continue
        if fmt.swaps:
            found.setdefault(rec["config"]["model"]["name"], set()).add(fmt.key)
    return found


def load_model(spec: dict, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForQuestionAnswering

    if spec["role"] == "decoder":
        cls, path = AutoModelForCausalLM, spec["path"]
    else:
        path = spec["path"]
        cls = AutoModelForQuestionAnswering
        if not Path(resolve_source(path)).is_dir():
            cls, path = AutoModel, spec["base"]
    model = cls.from_pretrained(resolve_source(path), dtype=dtype, use_safetensors=True)
    return model.to(device).eval()


def e2e_batches(role: str, model: torch.nn.Module, prof: DictConfig, device: torch.device, prefill: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    if role == "decoder":
        return [{"input_ids": torch.randint(3, vocab, (1, prefill), generator=g)}]
    b, t = prof.encoder_batch
    ids = torch.randint(3, vocab, (b, t), generator=g)
    return [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]


@torch.no_grad()
def e2e_cases(prof: DictConfig, models: dict, device: torch.device, published: dict[str, set[str]]) -> list[dict]:
    """Each model under test, dense in every dense dtype, then converted to each format (in the
    format's activation dtype), timed in this process; the output checked against the model
    before conversion (fake-quantized / masked)."""
    out = []
    runs = [(name, models[name]["role"], False) for name in prof.e2e_models]
    runs += [(name, "decoder", True) for name in prof.synthetic_e2e]
    for name, role, synthetic in runs:
        keys = list(dict.fromkeys([*prof.e2e_formats, *sorted(published.get(name, ()))]))
        if device.type != "cuda":
            keys = [k for k in keys if not needs_cuda(k)]
        dense_dtypes = list(dict.fromkeys([*prof.dense_dtypes, *(format_dtype(k, prof) for k in keys)]))
        if synthetic:   # a 7B model: one copy in the kernels' dtype is what fits beside its converted copy
            dense_dtypes = [prof.act_dtype]
            keys = [k for k in keys if format_dtype(k, prof) == prof.act_dtype]
        dense, dense_t = {}, {}
        try:
            for dname in dense_dtypes:
                dtype = DTYPES[dname]
                dense[dname] = (random_llama(name, device, dtype).model if synthetic
                                else load_model(models[name], device, dtype))
        except Exception as err:  # noqa: BLE001
            out.append({"model": name, "error": repr(err)[:300]})
            print(f"{name}: {err!r}", flush=True)
            continue
        first = next(iter(dense.values()))
        batches = e2e_batches(role, first, prof, device, 2048 if synthetic else prof.e2e_prefill_tokens)
        inputs = {k: v.to(device) for k, v in batches[0].items()}
        e2e_time = prof.get("e2e_min_run_time", prof.min_run_time)
        for dname, model in dense.items():
            dense_t[dname] = end_to_end.measure(model, batches, role, device, e2e_time)
            print(f"{name} dense {dname}: {dense_t[dname]}", flush=True)
        entries = []
        for key in keys:
            dname = format_dtype(key, prof)
            entry: dict[str, Any] = {"model": name, "role": role, "dtype": dname, "format": key,
                                     "synthetic": synthetic, "dense": dense_t}
            try:
                model = copy.deepcopy(dense[dname])
                end_to_end.compress_for(model, key)
                fake = _logits(model, inputs)
                conv = convert(model, parse(key), device, DTYPES[dname], route_tokens=list(prof.get("route_tokens") or ()))
                entry.update(conv.to_record(), format=key)
                entry["logits_rel_err"] = rel_err(_logits(model, inputs), fake)
                entry["converted"] = end_to_end.measure(model, batches, role, device, e2e_time)
                del model
            except Exception as err:  # noqa: BLE001
                entry.update(error=repr(err)[:300], trace=traceback.format_exc()[-500:])
            entries.append(entry)
        for dname, model in dense.items():   # again: the baseline is the better of the two timings
            dense_t[dname] = end_to_end.fastest(dense_t[dname], end_to_end.measure(model, batches, role, device,
                                                                                   e2e_time))
        for entry in entries:
            if "converted" in entry:
                # the headline ratios are against the fastest dense model on this device, metric by
                # metric (CPU decode in bf16 is slower than in fp32); the ratios per dtype beside them
                vs = {d: end_to_end.speedups(t, entry["converted"]) for d, t in dense_t.items()}
                entry.update({m: min(r[m] for r in vs.values()) for m in vs[entry["dtype"]]},
                             speedup_vs=vs, baseline="fastest dense dtype per metric, best of two timings")
            out.append(entry)
            print(f"{name} {entry['format']} ({entry['dtype']}): " + (entry.get("error") or ", ".join(
                f"{k}={entry[k]:.3f}" for k in ("prefill_speedup", "decode_speedup", "forward_speedup",
                                                "logits_rel_err") if k in entry)), flush=True)
        del dense
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _logits(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    out = model(**inputs, use_cache=False) if "attention_mask" not in inputs else model(**inputs)
    for name in ("logits", "start_logits", "last_hidden_state"):
        if getattr(out, name, None) is not None:
            return getattr(out, name).float()
    raise ValueError("the model returned no logits")


def run(cfg: DictConfig) -> dict[str, Any]:
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    name = cfg.profile if cfg.profile != "auto" else ("gpu" if device.type == "cuda" else "cpu")
    if name not in cfg.profiles:
        raise ValueError(f"unknown profile '{name}': {', '.join(cfg.profiles)}")
    prof = cfg.profiles[name]
    models = OmegaConf.to_container(cfg.models, resolve=True)
    torch.manual_seed(cfg.seed)
    report: dict[str, Any] = {**environment(device), "profile": name, "settings": OmegaConf.to_container(prof)}
    dtypes = sorted({*prof.dense_dtypes, prof.act_dtype, "float32"})
    size = prof.get("ceiling_size")    # null: matmul_peak's own size (past the cache-bound sizes)
    report["ceilings"] = {"matmul_flops": {**{d: matmul_peak(str(device), DTYPES[d], size) for d in dtypes},
                                           "int8": matmul_peak(str(device), torch.int8, size)},
                          "matmul_size": size, "copy_bytes_per_s": copy_bandwidth(str(device))}
    print(f"{report['device']}: peak " + ", ".join(f"{d} {v / 1e12:.2f} TFLOP/s" for d, v in
                                                  report["ceilings"]["matmul_flops"].items())
          + f", copy {report['ceilings']['copy_bytes_per_s'] / 1e9:.1f} GB/s", flush=True)
    out = Path(cfg.out or f"results/bench/kernels-{'smoke-' if name == 'smoke' else ''}{device_slug(device)}.json")
    report["layers"] = layer_cases(prof, models, device, report["ceilings"])
    _write(out, {**report, "complete": False})   # a run cut short keeps its per-layer figures
    published = record_formats(list(cfg.records_from)) if name != "smoke" else {}
    report["end_to_end"] = e2e_cases(prof, models, device, published)
    report["complete"] = True
    _write(out, report)
    print("wrote", out, flush=True)
    return report


def _write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out)


@hydra.main(config_path="../conf", config_name="kernels_bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
