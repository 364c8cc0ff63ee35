"""Loading Hugging Face models (hub id, local folder, or a folder inside a package) and saving
compressed ones so that they reload with their new shapes."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from eval.provenance import REPO_ROOT
from methods.core.arch import Family, family_of

MAX_SEQLEN = 2048
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    family: Family
    seqlen: int
    source: str


def resolve_source(path: str) -> str:
    """A local folder (absolute, or relative to the repo root / cwd) if one exists, a folder inside
    an installed package (`pkg:<module>/<subdir>`), else a hub id."""
    if path.startswith("pkg:"):
        import importlib
        module, _, sub = path[4:].partition("/")
        try:
            return str(Path(importlib.import_module(module).__file__).parent / sub)
        except ImportError:
            raise FileNotFoundError(f"model '{path}': package '{module}' is not installed "
                                    f"(pip install {module.replace('_', '-')})") from None
    for cand in (Path(path).expanduser(), REPO_ROOT / path):
        if cand.is_dir():
            return str(cand.resolve())
    return path


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype '{name}'; known: {', '.join(DTYPES)}")
    return DTYPES[name]


def model_family(path: str, trust_remote_code: bool = False, revision: str | None = None) -> tuple[str, Family, object]:
    """Source, family and HF config, read before any weights are loaded (fails fast). `revision`
    pins a hub model (a branch, tag or commit; part of the run's identity)."""
    source = resolve_source(path)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)
    except OSError as err:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            hint = "Give a local path with model.path=... or go online (unset HF_HUB_OFFLINE)."
        else:
            hint = ("Check the hub id (org/name, and model.revision), your network and your access to it, "
                    "or give a local path with model.path=...")
        raise FileNotFoundError(
            f"model '{path}' is neither a local folder nor reachable on the Hub ({err.__class__.__name__}). "
            f"{hint}") from None
    return source, family_of(config.model_type), config


def default_seqlen(config) -> int:
    return min(int(getattr(config, "max_position_embeddings", MAX_SEQLEN)), MAX_SEQLEN)


def load(path: str, dtype: str = "float32", device: str | torch.device = "cpu", seqlen: int | None = None,
         trust_remote_code: bool = False, revision: str | None = None) -> LoadedModel:
    """Load model + tokenizer from safetensors only (no unpickling); `seqlen` defaults to the
    model's max_position_embeddings capped at 2048."""
    source, family, config = model_family(path, trust_remote_code, revision)
    try:
        if (Path(source) / SHAPES_FILE).is_file():
            model = load_compressed(source, resolve_dtype(dtype), trust_remote_code)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=resolve_dtype(dtype), use_safetensors=True, trust_remote_code=trust_remote_code,
                revision=revision)
    except OSError as err:
        raise FileNotFoundError(f"model '{path}': no safetensors weights could be loaded ({err}). "
                                f"compbench never unpickles .bin checkpoints: convert them to safetensors.") from None
    model.eval()
    model.config.use_cache = False
    model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)
    limit = default_seqlen(config)
    seqlen = seqlen or limit
    if seqlen > getattr(config, "max_position_embeddings", seqlen):
        raise ValueError(f"seqlen {seqlen} exceeds the model's max_position_embeddings "
                         f"{config.max_position_embeddings}")
    return LoadedModel(model, tokenizer, family, seqlen, source)


# the real shapes of the survey's Llamas: (hidden, intermediate, layers, heads)
RANDOM_LLAMAS = {"llama-7b": (4096, 11008, 32, 32), "llama-13b": (5120, 13824, 40, 40)}


def random_llama(name: str, device: torch.device | str, dtype: torch.dtype = torch.bfloat16,
                 seqlen: int = 2048, layers: int | None = None) -> LoadedModel:
    """A Llama of the named size with random weights, built on `device`: the real shapes and
    cost, for timing only (its outputs mean nothing; no checkpoint or tokenizer needed).
    `layers`: only the first blocks (each costs what one of the whole model's costs)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    if name not in RANDOM_LLAMAS:
        raise ValueError(f"no random-weight model '{name}'; known: {', '.join(RANDOM_LLAMAS)}")
    hidden, inter, all_layers, heads = RANDOM_LLAMAS[name]
    layers = min(layers or all_layers, all_layers)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, vocab_size=32000,
                         max_position_embeddings=4096, use_cache=False)
    with torch.device(device):    # initialised where it runs, in its dtype: seconds for a 7B on a GPU
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return LoadedModel(model.eval(), None, family_of("llama"), seqlen, f"random:{name}")


SHAPES_FILE = "compbench_shapes.json"


def save_compressed(model: torch.nn.Module, tokenizer, folder: str | Path) -> Path:
    """Save a (possibly physically pruned) model as safetensors plus the shape of every linear and
    the per-layer head counts, so `load` rebuilds the same architecture without unpickling."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    shapes = {name: [m.out_features, m.in_features, m.bias is not None]
              for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    heads = {name: m.num_heads for name, m in model.named_modules() if isinstance(getattr(m, "num_heads", None), int)}
    (folder / SHAPES_FILE).write_text(json.dumps({"linears": shapes, "num_heads": heads}, indent=1))
    return folder


def load_compressed(folder: str | Path, dtype: torch.dtype, trust_remote_code: bool = False,
                    model_class=AutoModelForCausalLM) -> torch.nn.Module:
    import json

    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / SHAPES_FILE).read_text())
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    model = model_class.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    for name, (out_f, in_f, bias) in meta["linears"].items():
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        old = getattr(owner, leaf)
        if (old.out_features, old.in_features) != (out_f, in_f):
            setattr(owner, leaf, torch.nn.Linear(in_f, out_f, bias=bias, dtype=dtype))
    for name, n in meta["num_heads"].items():
        model.get_submodule(name).num_heads = n
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(file)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise OSError(f"{folder}: weights do not match the saved shapes (missing {sorted(missing)[:3]}, "
                      f"unexpected {sorted(unexpected)[:3]})")
    if tied:
        model.tie_weights()
    return model
