"""Loading a Hugging Face causal LM (hub id or local folder) for compression and evaluation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from eval.provenance import REPO_ROOT
from methods.arch import Family, family_of

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
    """A local folder (absolute, or relative to the repo root / cwd) if one exists, else a hub id."""
    for cand in (Path(path).expanduser(), REPO_ROOT / path):
        if cand.is_dir():
            return str(cand.resolve())
    return path


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype '{name}'; known: {', '.join(DTYPES)}")
    return DTYPES[name]


def model_family(path: str, trust_remote_code: bool = False) -> tuple[str, Family, object]:
    """Source, family and HF config, read before any weights are loaded (fails fast)."""
    source = resolve_source(path)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise FileNotFoundError(
            f"model '{path}' is neither a local folder nor reachable on the Hub ({err.__class__.__name__}). "
            f"Give a local path with model.path=... or go online (unset HF_HUB_OFFLINE).") from None
    return source, family_of(config.model_type), config


def default_seqlen(config) -> int:
    return min(int(getattr(config, "max_position_embeddings", MAX_SEQLEN)), MAX_SEQLEN)


def load(path: str, dtype: str = "float32", device: str | torch.device = "cpu", seqlen: int | None = None,
         trust_remote_code: bool = False) -> LoadedModel:
    """Load model + tokenizer from safetensors only (no unpickling); `seqlen` defaults to the
    model's max_position_embeddings capped at 2048."""
    source, family, config = model_family(path, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=resolve_dtype(dtype), use_safetensors=True, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise FileNotFoundError(f"model '{path}': no safetensors weights could be loaded ({err}). "
                                f"compbench never unpickles .bin checkpoints: convert them to safetensors.") from None
    model.eval()
    model.config.use_cache = False
    model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    limit = default_seqlen(config)
    seqlen = seqlen or limit
    if seqlen > getattr(config, "max_position_embeddings", seqlen):
        raise ValueError(f"seqlen {seqlen} exceeds the model's max_position_embeddings "
                         f"{config.max_position_embeddings}")
    return LoadedModel(model, tokenizer, family, seqlen, source)
