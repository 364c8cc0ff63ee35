"""Datasets for perplexity and calibration, loaded the way the GPTQ/SparseGPT/Wanda code loads them.

Every loader first looks for the dataset's standard file under the data root; otherwise it
goes to the Hugging Face Hub with ``datasets``, unless offline, where it raises `DataMissing`.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

# Standard file names under the data root (the original distributions' layouts).
WIKITEXT2_RAW = {split: f"wikitext-2-raw/wiki.{split}.raw" for split in ("train", "valid", "test")}
WIKITEXT2_TOKENS = {split: f"wikitext-2-tokens/{split}.txt" for split in ("train", "valid", "test")}
C4_SHARDS = {
    "train": "c4/c4-train.00000-of-01024.json.gz",
    "validation": "c4/c4-validation.00000-of-00008.json.gz",
}
EVAL_DATASETS = ("wikitext2", "c4")
CALIB_SOURCES = ("c4", "wikitext2", "file")


class DataMissing(FileNotFoundError):
    """A dataset file is absent and the Hub may not be used."""


@dataclass(frozen=True)
class DataSource:
    """Where datasets come from: a local root with standard file names, and whether the Hub is allowed."""

    root: Path
    offline: bool

    @classmethod
    def from_config(cls, root: str | os.PathLike, offline: bool | None = None) -> "DataSource":
        if offline is None:
            offline = any(os.environ.get(v, "0").lower() in ("1", "true", "yes")
                          for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
        return cls(Path(root).expanduser().resolve(), bool(offline))

    def local(self, relpath: str, what: str) -> Path | None:
        """The local file if present; None if absent and the Hub may be used; else `DataMissing`."""
        path = self.root / relpath
        if path.is_file():
            if _blank(path):
                raise DataMissing(f"{what}: the local file {path} is empty (or only whitespace): "
                                  f"put the text there again")
            return path
        if self.offline:
            raise DataMissing(
                f"{what}: no local file {path} and the Hugging Face Hub is off (offline mode). "
                f"Put the file there (standard name '{relpath}' under the data root; set the root with "
                f"paths.data_root=... or COMPBENCH_DATA_ROOT), or go online (unset HF_HUB_OFFLINE)."
            )
        return None


def _blank(path: Path, chunk: int = 1 << 16) -> bool:
    """Whether the file holds nothing but whitespace (read up to its first other byte)."""
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            if block.strip():
                return False
    return True


# ---------------------------------------------------------------------------------------------
# Raw text
# ---------------------------------------------------------------------------------------------

def wikitext2_rows_from_file(path: Path) -> list[str]:
    """Rows of the HF `wikitext-2-raw-v1` split from the original `wiki.<split>.raw` file.

    The file has one row per line; the HF dataset's empty rows are written as " \\n" and every
    content row keeps its trailing "\\n".
    """
    text = path.read_text(encoding="utf-8")
    return ["" if line == " \n" else line for line in text.splitlines(keepends=True)]


def wikitext2_rows(src: DataSource, split: str) -> list[str]:
    local = src.local(WIKITEXT2_RAW[split], f"WikiText-2 raw {split}")
    if local is not None:
        return wikitext2_rows_from_file(local)
    from datasets import load_dataset

    hub_split = {"valid": "validation"}.get(split, split)
    return list(load_dataset("wikitext", "wikitext-2-raw-v1", split=hub_split)["text"])


def wikitext2_text(src: DataSource, split: str = "test", join: str = "\n\n") -> str:
    """The split's rows joined as the GPTQ code joins them ("\\n\\n" for test)."""
    return join.join(wikitext2_rows(src, split))


def c4_shard(src: DataSource, split: str):
    """C4 `en` shard 0 of `split` as a `datasets.Dataset` (hub `allenai/c4` or the local .json.gz)."""
    from datasets import load_dataset

    local = src.local(C4_SHARDS[split], f"C4 {split} shard 0")
    if local is not None:
        return load_dataset("json", data_files={split: str(local)}, split=split)
    hub_file = "en/" + Path(C4_SHARDS[split]).name
    return load_dataset("allenai/c4", data_files={split: hub_file}, split=split)


# ---------------------------------------------------------------------------------------------
# Tokenized evaluation streams
# ---------------------------------------------------------------------------------------------

def tokenize(tokenizer, text: str) -> torch.Tensor:
    """Token ids of `text` as one 1-D tensor, special tokens as the tokenizer adds them (GPTQ does)."""
    return tokenizer(text, return_tensors="pt").input_ids[0]


_STREAMS: dict[tuple, torch.Tensor] = {}


def memoised_stream(key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The one per-process memo of tokenised streams (evaluation and calibration), so that a sweep
    tokenises each text once. `key` names everything the stream depends on; callers never write
    to the tensor it returns."""
    if key not in _STREAMS:
        _STREAMS[key] = make()
    return _STREAMS[key]


def tokenizer_key(tokenizer) -> str | int:
    """What a per-process memo of tokenised data keys a tokenizer by: its source (a local folder
    or a Hub id), else the object itself."""
    return getattr(tokenizer, "name_or_path", id(tokenizer))


def eval_tokens(name: str, src: DataSource, tokenizer, seqlen: int) -> torch.Tensor:
    """The token stream a perplexity protocol is measured on (memoised per process for sweeps).

    wikitext2: the test rows joined with "\\n\\n". c4: the "c4-new" protocol, the first 1,100
    validation documents joined with " ", cut to 256 x seqlen tokens.
    """
    return memoised_stream(("eval", name, src, tokenizer_key(tokenizer), seqlen),
                           lambda: _eval_tokens(name, src, tokenizer, seqlen))


def _eval_tokens(name: str, src: DataSource, tokenizer, seqlen: int) -> torch.Tensor:
    if name == "wikitext2":
        return tokenize(tokenizer, wikitext2_text(src, "test"))
    if name == "c4":
        val = c4_shard(src, "validation")
        return tokenize(tokenizer, " ".join(val[:1100]["text"]))[: 256 * seqlen]
    raise ValueError(f"unknown evaluation dataset '{name}'; known: {', '.join(EVAL_DATASETS)}")


# ---------------------------------------------------------------------------------------------
# Calibration sampling (GPTQ's loops, with a private RNG seeded like random.seed(seed))
# ---------------------------------------------------------------------------------------------

def sample_token_windows(ids: torch.Tensor, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """GPTQ's sampler over one token stream: `i = randint(0, n - seqlen - 1)` per sample."""
    if ids.numel() <= seqlen:
        raise ValueError(f"calibration text has {ids.numel()} tokens; need more than seqlen={seqlen}")
    rng = random.Random(seed)
    starts = [rng.randint(0, ids.numel() - seqlen - 1) for _ in range(nsamples)]
    return torch.stack([ids[i:i + seqlen] for i in starts])


def sample_document_windows(docs: Sequence[str], tok: Callable[[str], torch.Tensor],
                            nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """GPTQ's C4 sampler: draw documents until one is longer than seqlen, then a random window of it."""
    rng = random.Random(seed)
    windows = []
    for _ in range(nsamples):
        while True:
            enc = tok(docs[rng.randint(0, len(docs) - 1)])
            if enc.numel() > seqlen:
                break
        i = rng.randint(0, enc.numel() - seqlen - 1)
        windows.append(enc[i:i + seqlen])
    return torch.stack(windows)


def calibration_windows(source: str, src: DataSource, tokenizer, nsamples: int, seqlen: int,
                        seed: int, path: str | None = None, join: str = "\n\n") -> torch.Tensor:
    """`nsamples` calibration windows of `seqlen` tokens, shape (nsamples, seqlen)."""
    if source == "c4":
        docs = _C4Texts(c4_shard(src, "train"))
        return sample_document_windows(docs, lambda t: tokenize(tokenizer, t), nsamples, seqlen, seed)
    return sample_token_windows(calibration_stream(source, src, tokenizer, path, join), nsamples, seqlen, seed)


def calibration_stream(source: str, src: DataSource, tokenizer, path: str | None = None,
                       join: str = "\n\n") -> torch.Tensor:
    """The token stream of a one-text calibration source (WikiText-2 train, or a local file),
    memoised per process for sweeps like the evaluation streams (a file by its path, size and
    modification time). Callers index it and never write to it."""
    if source == "wikitext2":
        return memoised_stream(("calib", source, src, tokenizer_key(tokenizer), join),
                               lambda: tokenize(tokenizer, wikitext2_text(src, "train", join=join)))
    if source == "file":
        if not path:
            raise ValueError("calib.source=file needs calib.path=<text file>")
        file = Path(path)
        if not file.is_absolute():
            file = src.root / file
        if not file.is_file():
            raise DataMissing(f"calibration file {file} does not exist; set calib.path to a text file")
        stat = file.stat()
        return memoised_stream(("calib", source, str(file), stat.st_size, stat.st_mtime_ns, tokenizer_key(tokenizer)),
                               lambda: tokenize(tokenizer, file.read_text(encoding="utf-8")))
    raise ValueError(f"unknown calibration source '{source}'; known: {', '.join(CALIB_SOURCES)}")


class _C4Texts:
    """Lazy `docs[i]` over a datasets.Dataset's text column (the shard has ~356k documents)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> str:
        return self.ds[i]["text"]
