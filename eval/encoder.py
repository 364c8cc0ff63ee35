"""Encoder-only tasks (SQuAD v1.1, MNLI, QQP): task models, batches, evaluation.

`squad_dev_split` is the documented offline variant: fine-tune on the even-numbered SQuAD dev
articles, evaluate on the odd ones. Records and tables carry its name, so it is never confused
with the SQuAD protocol (fine-tune on train, evaluate on dev)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from eval import glue, squad
from eval.data import DataSource
from eval.qa_features import decode, prepare_features

TASKS = ("squad", "squad_dev_split", "mnli", "qqp")


@dataclass(frozen=True)
class TaskConfig:
    name: str
    max_length: int = 384
    doc_stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    max_eval_examples: int | None = None  # a prefix of the evaluation set (null: all of it)
    batch_size: int = 32

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskConfig":
        if d["name"] not in TASKS:
            raise ValueError(f"unknown encoder task '{d['name']}'; known: {', '.join(TASKS)}")
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def is_qa(self) -> bool:
        return self.name.startswith("squad")

    @property
    def num_labels(self) -> int:
        return {"mnli": 3, "qqp": 2}.get(self.name, 0)

    def model_class(self):
        return AutoModelForQuestionAnswering if self.is_qa else AutoModelForSequenceClassification


def train_examples(task: TaskConfig, src: DataSource) -> list:
    """Fine-tuning (and calibration) examples."""
    if task.name == "squad_dev_split":
        return squad.squad_dev_split(squad.load_squad(src, "validation"))[0]
    if task.name == "squad":
        return squad.load_squad(src, "train")
    return glue.load_glue(src, task.name, "train")


def eval_sets(task: TaskConfig, src: DataSource) -> dict[str, list]:
    """The evaluation sets by name (MNLI: matched and mismatched), each cut to max_eval_examples."""
    if task.name == "squad_dev_split":
        sets = {"dev_half": squad.squad_dev_split(squad.load_squad(src, "validation"))[1]}
    elif task.name == "squad":
        sets = {"dev": squad.load_squad(src, "validation")}
    elif task.name == "mnli":
        sets = {"matched": glue.load_glue(src, "mnli", "validation_matched"),
                "mismatched": glue.load_glue(src, "mnli", "validation_mismatched")}
    else:
        sets = {"dev": glue.load_glue(src, task.name, "validation")}
    n = task.max_eval_examples
    return {k: v[:n] if n else v for k, v in sets.items()}


def pair_batch(examples: list[glue.PairExample], tokenizer, max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], truncation=True,
                    max_length=max_length, padding="longest", return_tensors="pt")
    enc["labels"] = torch.tensor([e.label for e in examples])
    return dict(enc)


def training_batches(task: TaskConfig, examples: list, tokenizer, batch_size: int, seed: int,
                     limit: int | None = None) -> list[dict[str, torch.Tensor]]:
    """Shuffled (seeded) batches with targets; `limit` caps the number of features."""
    rng = random.Random(seed)
    if task.is_qa:
        feats = prepare_features(examples, tokenizer, task.max_length, task.doc_stride, with_targets=True)
        order = list(range(feats.input_ids.shape[0]))
        rng.shuffle(order)
        order = order[:limit] if limit else order
        batches = []
        for i in range(0, len(order), batch_size):
            idx = torch.tensor(order[i:i + batch_size])
            b = {"input_ids": feats.input_ids[idx], "attention_mask": feats.attention_mask[idx],
                 "start_positions": feats.start_positions[idx], "end_positions": feats.end_positions[idx]}
            if feats.token_type_ids is not None:
                b["token_type_ids"] = feats.token_type_ids[idx]
            batches.append(b)
        return batches
    order = list(range(len(examples)))
    rng.shuffle(order)
    order = order[:limit] if limit else order
    return [pair_batch([examples[j] for j in order[i:i + batch_size]], tokenizer, task.max_length)
            for i in range(0, len(order), batch_size)]


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


@torch.inference_mode()
def evaluate(task: TaskConfig, model, tokenizer, examples: list, device: torch.device) -> dict[str, float]:
    """SQuAD: EM and F1 (official v1.1 metric). MNLI: matched/mismatched accuracy. QQP: accuracy, F1."""
    model.eval().to(device)
    if task.is_qa:
        feats = prepare_features(examples, tokenizer, task.max_length, task.doc_stride)
        starts, ends = [], []
        for i in range(0, feats.input_ids.shape[0], task.batch_size):
            sl = slice(i, i + task.batch_size)
            inputs = {"input_ids": feats.input_ids[sl], "attention_mask": feats.attention_mask[sl]}
            if feats.token_type_ids is not None:
                inputs["token_type_ids"] = feats.token_type_ids[sl]
            out = model(**{k: v.to(device) for k, v in inputs.items()})
            starts.append(out.start_logits.float().cpu())
            ends.append(out.end_logits.float().cpu())
        preds = decode(examples, feats, torch.cat(starts), torch.cat(ends), task.n_best, task.max_answer_length)
        return {**squad.evaluate(examples, preds), "examples": len(examples)}
    preds = []
    for i in range(0, len(examples), task.batch_size):
        b = pair_batch(examples[i:i + task.batch_size], tokenizer, task.max_length)
        logits = model(**{k: v.to(device) for k, v in model_inputs(b).items()}).logits
        preds += logits.argmax(-1).tolist()
    labels = [e.label for e in examples]
    out = {"acc": 100 * glue.accuracy(preds, labels), "examples": len(examples)}
    if task.name == "qqp":
        out["f1"] = 100 * glue.f1_positive(preds, labels)
    return out


def headline(task: TaskConfig, metrics: dict[str, dict[str, float]]) -> float:
    """The survey's per-task figure: SQuAD F1, MNLI matched accuracy, QQP accuracy."""
    if task.is_qa:
        return next(iter(metrics.values()))["f1"]
    return metrics["matched" if task.name == "mnli" else "dev"]["acc"]
