"""What a run is, by content rather than by spelling: the model by its resolved source, data files
by their bytes, and the settings that change the numbers (device kind, GPU, CPU thread count).

Two records with the same identity hash to the same id, on any machine and from any working
directory: `models/tiny-llama-wt2`, `./models/tiny-llama-wt2` and its absolute path are one model.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

# weights up to this size are hashed whole; above it, by their safetensors headers and sizes
FULL_HASH_BYTES = 1 << 30
# files beside the weights that change what a model computes
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
               "compbench_shapes.json")


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (memoised per process on path, size and mtime)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _safetensors_header(path: Path) -> bytes:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return fh.read(n)


def weights_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def local_model_identity(folder: Path) -> dict[str, Any]:
    """A local model folder by content: the hash of its config/tokenizer files and of its weights
    (whole up to FULL_HASH_BYTES, else each file's safetensors header and size)."""
    h = hashlib.sha256()
    for name in MODEL_FILES:
        f = folder / name
        if f.is_file():
            h.update(name.encode() + b"\0" + file_sha256(f).encode())
    weights = weights_files(folder)
    total = sum(w.stat().st_size for w in weights)
    how = "sha256 of config, tokenizer and weights" if total <= FULL_HASH_BYTES else \
        "sha256 of config, tokenizer, and the weights' safetensors headers and sizes"
    for w in weights:
        digest = file_sha256(w) if total <= FULL_HASH_BYTES else \
            hashlib.sha256(_safetensors_header(w)).hexdigest() + f":{w.stat().st_size}"
        h.update(w.name.encode() + b"\0" + digest.encode())
    return {"local": h.hexdigest()[:32], "how": how}


def model_identity(path: str, revision: str | None = None) -> dict[str, Any]:
    """The model a `model.path` names: a local folder (or `pkg:` folder) by content, else a hub
    id with its revision."""
    from eval.models import resolve_source
    source = resolve_source(path)
    if Path(source).is_dir():
        return local_model_identity(Path(source))
    return {"hub": source, "revision": revision or "main"}


def data_identity(files: dict[str, Path | str | None]) -> dict[str, Any]:
    """Each named data input by content (`sha256`), or by its hub name where no local file is read."""
    out: dict[str, Any] = {}
    for name, f in sorted(files.items()):
        out[name] = {"sha256": file_sha256(f)} if f is not None and Path(f).is_file() else {"hub": name}
    return out


def numerics(device: torch.device) -> dict[str, Any]:
    """The settings beyond the config that change the numbers: the device kind and, on a CPU, the
    intra-op thread count (reductions split differently); on a GPU, its model."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(device)}
    return {"device": device.type, "threads": torch.get_num_threads()}


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
