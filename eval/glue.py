"""GLUE MNLI and QQP: loading (hub `glue/mnli`, `glue/qqp`, or the GLUE TSV files) and metrics
(accuracy; QQP also F1 with positive = duplicate)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from eval.data import DataSource

MNLI_LABELS = ("entailment", "neutral", "contradiction")  # the hub's label ids 0, 1, 2
GLUE_FILES = {
    ("mnli", "validation_matched"): "glue/MNLI/dev_matched.tsv",
    ("mnli", "validation_mismatched"): "glue/MNLI/dev_mismatched.tsv",
    ("mnli", "train"): "glue/MNLI/train.tsv",
    ("qqp", "validation"): "glue/QQP/dev.tsv",
    ("qqp", "train"): "glue/QQP/train.tsv",
}


@dataclass(frozen=True)
class PairExample:
    text_a: str
    text_b: str
    label: int


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def pairs_from_tsv(task: str, path: Path) -> list[PairExample]:
    rows = _read_tsv(path)
    if task == "mnli":
        return [PairExample(r["sentence1"], r["sentence2"], MNLI_LABELS.index(r["gold_label"]))
                for r in rows if r["gold_label"] in MNLI_LABELS]
    if task == "qqp":
        return [PairExample(r["question1"], r["question2"], int(r["is_duplicate"]))
                for r in rows if r.get("is_duplicate") not in (None, "")]
    raise ValueError(f"unknown GLUE task '{task}'; known: mnli, qqp")


def load_glue(src: DataSource, task: str, split: str) -> list[PairExample]:
    key = (task, split)
    if key not in GLUE_FILES:
        raise ValueError(f"unknown GLUE task/split {key}; known: {sorted(GLUE_FILES)}")
    local = src.local(GLUE_FILES[key], f"GLUE {task} {split}")
    if local is not None:
        return pairs_from_tsv(task, local)
    from datasets import load_dataset
    ds = load_dataset("glue", task, split=split)
    a, b = ("premise", "hypothesis") if task == "mnli" else ("question1", "question2")
    return [PairExample(r[a], r[b], int(r["label"])) for r in ds if r["label"] >= 0]


def accuracy(preds: list[int], labels: list[int]) -> float:
    return sum(p == y for p, y in zip(preds, labels)) / len(labels)


def f1_positive(preds: list[int], labels: list[int], positive: int = 1) -> float:
    tp = sum(p == positive and y == positive for p, y in zip(preds, labels))
    fp = sum(p == positive and y != positive for p, y in zip(preds, labels))
    fn = sum(p != positive and y == positive for p, y in zip(preds, labels))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
