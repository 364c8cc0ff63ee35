"""A trainer's checkpoints on disk, read with nothing that can run code.

One safetensors file per checkpoint: every tensor of the saved object (model weights, optimizer
moments, RNG state) is a tensor of the file, and the object's structure around them (dicts with
their key types, lists, tuples, numbers, strings) is JSON in the file's header. Loading parses
that header and the tensors' bytes; no unpickler ever runs, so a file planted in a shared results
folder can at worst fail to load. Writes are atomic (a temporary file, then a rename).

A torch pickle where a checkpoint belongs (the `.pt` files of earlier versions, or a planted one)
is refused with one line naming it, never opened."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

SUFFIX = ".safetensors"
PICKLE_SUFFIX = ".pt"


class UnsafeCheckpoint(ValueError):
    """A checkpoint file that compbench will not read: one line, naming it."""


def _encode(obj: Any, tensors: dict[str, torch.Tensor], seen: dict[tuple, str], storages: set[int]) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu")
        view = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if view in seen:                                   # the same tensor twice (tied weights): stored once
            return {"__tensor__": seen[view]}
        if view[0] in storages or not t.is_contiguous():   # another view of a stored tensor: its own copy
            t = t.clone(memory_format=torch.contiguous_format)
        storages.add(view[0])
        key = seen[view] = str(len(tensors))
        tensors[key] = t
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, tensors, seen, storages), _encode(v, tensors, seen, storages)]
                             for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__tuple__" if isinstance(obj, tuple) else "__list__":
                [_encode(x, tensors, seen, storages) for x in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"a checkpoint holds tensors, containers, numbers and strings only, not {type(obj).__name__}")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, dict):
        (tag, value), = node.items()
        if tag == "__tensor__":
            return tensors[value]
        if tag == "__dict__":
            return {_decode(k, tensors): _decode(v, tensors) for k, v in value}
        items = [_decode(x, tensors) for x in value]
        return tuple(items) if tag == "__tuple__" else items
    return node


def save(obj: Any, path: Path) -> None:
    """Write `obj` to `path` (a .safetensors file) atomically."""
    from safetensors.torch import save_file
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(obj, tensors, {}, set())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata={"compbench": json.dumps(skeleton)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: Path) -> Any:
    """The object saved at `path`; `UnsafeCheckpoint` for anything that is not such a file."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            skeleton = json.loads((f.metadata() or {})["compbench"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, KeyError, ValueError, OSError) as err:
        raise UnsafeCheckpoint(f"{path}: not a compbench checkpoint ({type(err).__name__}: {err}); "
                               f"delete it to train afresh") from None
    return _decode(skeleton, tensors)


def refuse_pickles(folder: Path, names: tuple[str, ...]) -> None:
    """`UnsafeCheckpoint` if a torch pickle sits where one of these checkpoints belongs."""
    for name in names:
        planted = folder / f"{name}{PICKLE_SUFFIX}"
        if planted.exists():
            raise UnsafeCheckpoint(f"{planted}: a torch pickle where compbench keeps safetensors checkpoints; "
                                   f"pickles are never loaded (they can run code): delete it to go on")
