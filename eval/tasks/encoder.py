"""Encoder-only tasks (Tables 2 and 4): a fine-tuned task baseline (cached), calibration and
training batches from the task's training data, task evaluation. The subclasses in squad.py and
glue.py say where their examples come from and which number is the headline."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from eval import glue, models, squad
from eval.data import tokenizer_key
from eval.qa_features import QAFeatures, decode, prepare_features
from eval.settings import RunSettings
from eval.tasks.base import Evaluation, Loaded, Task
from methods.core.arch import FAMILIES
from methods.core.calibration import InputBatches, model_inputs

TIMING_EXAMPLES = 64  # training examples timed per pass (timing.inputs=null)
# the last (task, data source, tokenizer, max_length, stride) tokenised, and its features: one
# entry, as a full SQuAD training split at 384 tokens holds about 1 GB of ids
_TRAIN_FEATURES: dict[tuple, QAFeatures] = {}


@dataclass(frozen=True)
class TaskConfig:
    """The encoder task's settings (conf/task/<name>.yaml)."""

    name: str
    max_length: int = 384
    doc_stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    max_eval_examples: int | None = None  # a prefix of the evaluation set (null: all of it)
    batch_size: int = 32

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class EncoderTask(Task):
    role = "encoder"
    bit_base = 32
    calibration_type = InputBatches
    is_qa: ClassVar[bool] = False
    num_labels: ClassVar[int] = 0
    positive_f1: ClassVar[bool] = False     # pair tasks: F1 of the positive class beside accuracy (QQP)

    def __init__(self, run: RunSettings, section: dict[str, Any]):
        super().__init__(run, section)
        self.settings = TaskConfig.from_dict(section)
        self.seqlen = self.settings.max_length

    # ---- what each task says -------------------------------------------------------------------
    def train_examples(self) -> list:
        """Fine-tuning (and calibration) examples."""
        raise NotImplementedError

    def all_eval_sets(self) -> dict[str, list]:
        raise NotImplementedError

    def headline(self, metrics: dict[str, dict[str, float]]) -> float:
        """The survey's per-task figure."""
        raise NotImplementedError

    # ---- the shared lifecycle --------------------------------------------------------------------
    def model_class(self):
        from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification
        return AutoModelForQuestionAnswering if self.is_qa else AutoModelForSequenceClassification

    def prepare(self) -> None:
        mc = self.run.model
        _, self.family, self.model_config = models.model_family(mc.finetuned or mc.path)
        if self.family.role != "encoder":
            encoders = ", ".join(f.name for f in FAMILIES.values() if f.role == "encoder")
            raise ValueError(f"task '{self.name}' needs an encoder ({encoders} family), "
                             f"got a '{self.family.name}' model")

    def dense_identity(self, device: torch.device) -> dict[str, Any]:
        from eval.identity import numerics
        return {"model": self.model_identity(), "task": self.section, "finetune": dict(self.run.finetune),
                "method": {"name": "dense"}, "data": self.data_identity(self.data_files()),
                "numerics": numerics(device)}

    def calib_identity(self, needs_calibration: bool) -> dict[str, Any] | None:
        return {"nsamples": self.run.calib.nsamples, "batch_size": self.run.engine.batch_size}

    def baseline(self, device: torch.device) -> Path | str:
        """The fine-tuned task model: `model.finetuned`, or the cached fine-tune (trained if absent)."""
        from eval.finetune import ensure_finetuned
        mc = self.run.model
        return mc.finetuned or ensure_finetuned(
            mc.name, models.resolve_source(mc.path), self, dict(self.run.finetune),
            Path(self.run.results) / "finetuned", torch.device(device))

    def load(self, device: torch.device | str) -> Loaded:
        from transformers import AutoTokenizer
        baseline = self.baseline(device)
        source = models.resolve_source(str(baseline))
        tokenizer = AutoTokenizer.from_pretrained(source)
        if (Path(source) / models.SHAPES_FILE).is_file():
            model = models.load_compressed(source, torch.float32, model_class=self.model_class())
        else:
            kwargs = {} if self.is_qa else {"num_labels": self.num_labels}
            model = self.model_class().from_pretrained(source, use_safetensors=True, **kwargs)
        model.to(device).eval()
        return Loaded(model, tokenizer, self.family, {"baseline": str(baseline), "task_variant": self.name})

    def eval_sets(self, full: dict[str, list] | None = None) -> dict[str, list]:
        """The evaluation sets by name, each cut to max_eval_examples."""
        n = self.settings.max_eval_examples
        return {k: v[:n] if n else v for k, v in (full or self.all_eval_sets()).items()}

    def training_batches(self, tokenizer, batch_size: int, seed: int, limit: int | None = None,
                         examples: list | None = None) -> list[dict[str, torch.Tensor]]:
        """Shuffled (seeded) batches with targets; `limit` caps the number of features."""
        s = self.settings
        rng = random.Random(seed)
        if self.is_qa:
            feats = self._train_features(tokenizer) if examples is None else \
                prepare_features(examples, tokenizer, s.max_length, s.doc_stride, with_targets=True)
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
        examples = self.train_examples() if examples is None else examples
        order = list(range(len(examples)))
        rng.shuffle(order)
        order = order[:limit] if limit else order
        return [pair_batch([examples[j] for j in order[i:i + batch_size]], tokenizer, s.max_length)
                for i in range(0, len(order), batch_size)]

    def _train_features(self, tokenizer) -> QAFeatures:
        """The training split's QA features with targets, tokenised once per process (a sweep's
        runs and a calibration beside a training run draw from the same features)."""
        s = self.settings
        key = (self.name, self.data, tokenizer_key(tokenizer), s.max_length, s.doc_stride)
        if key not in _TRAIN_FEATURES:
            f = prepare_features(self.train_examples(), tokenizer, s.max_length, s.doc_stride, with_targets=True)
            _TRAIN_FEATURES.clear()
            # training reads ids and targets; the character offsets serve decoding only
            _TRAIN_FEATURES[key] = QAFeatures(f.input_ids, f.attention_mask, f.token_type_ids, f.example_index, [],
                                              f.start_positions, f.end_positions)
        return _TRAIN_FEATURES[key]

    def calibration(self, loaded: Loaded, seed: int) -> InputBatches:
        return InputBatches(self.training_batches(loaded.tokenizer, self.run.engine.batch_size, seed,
                                                  limit=self.run.calib.nsamples))

    def training_data(self, loaded: Loaded, batch_size: int, seed: int, limit: int | None = None) -> InputBatches:
        return InputBatches(self.training_batches(loaded.tokenizer, batch_size, seed, limit))

    def check_training(self, method) -> None:
        if "encoder" not in method.roles:
            raise ValueError(f"task '{self.name}' has no training recipe for '{method.name}': it trains decoders; "
                             f"use task=lm_finetune (or task=lm) with a causal LM")
        method.check_family(self.family, self.model_config)

    def load_pretrained(self, device: torch.device | str) -> torch.nn.Module:
        """`model.path` (the pre-trained encoder) with a newly initialised task head."""
        kwargs = {} if self.is_qa else {"num_labels": self.num_labels}
        source = models.resolve_source(self.run.model.path)
        model = self.model_class().from_pretrained(source, use_safetensors=True,
                                                   revision=self.run.model.revision, **kwargs)
        return model.to(device)

    default_timing_inputs = TIMING_EXAMPLES

    metric: ClassVar[str]   # the headline, in words

    def protocol_name(self) -> str:
        return f"{self.name}: {self.metric} on its evaluation set, at {self.settings.max_length} tokens"

    def shortfalls(self, ev: Evaluation, method, trained: bool) -> list[str]:
        out, full = [], None
        for name, m in ev.metrics[self.name].items():
            if not isinstance(m, dict) or m.get("examples") is None:
                continue
            if m.get("of") is None:   # a record of before the count was kept: count the set
                full = full or self.all_eval_sets()
            of = m["of"] if m.get("of") is not None else len(full[name])
            if m["examples"] < of:
                out.append(f"task.max_eval_examples={self.settings.max_eval_examples} ({name}: {m['examples']} "
                           f"of {of} examples)")
        cap = self.run.finetune.get("max_train_features")
        if self.run.model.finetuned is None and cap is not None:
            out.append(f"finetune.max_train_features={cap}")
        return out + super().shortfalls(ev, method, trained)

    def timing_batches(self, loaded: Loaded) -> list[dict[str, torch.Tensor]]:
        batches = self.training_batches(loaded.tokenizer, self.settings.batch_size, seed=0,
                                        examples=self.train_examples()[:self.timing_identity()["inputs"]])
        return [model_inputs(b) for b in batches]

    @torch.inference_mode()
    def score(self, model, tokenizer, examples: list, device: torch.device) -> dict[str, float]:
        """SQuAD: EM and F1 (official v1.1 metric). Pair tasks: accuracy (QQP: and F1)."""
        s = self.settings
        model.eval().to(device)
        if self.is_qa:
            feats = prepare_features(examples, tokenizer, s.max_length, s.doc_stride)
            starts, ends = [], []
            for i in range(0, feats.input_ids.shape[0], s.batch_size):
                sl = slice(i, i + s.batch_size)
                inputs = {"input_ids": feats.input_ids[sl], "attention_mask": feats.attention_mask[sl]}
                if feats.token_type_ids is not None:
                    inputs["token_type_ids"] = feats.token_type_ids[sl]
                out = model(**model_inputs(inputs, device))
                starts.append(out.start_logits.float().cpu())
                ends.append(out.end_logits.float().cpu())
            preds = decode(examples, feats, torch.cat(starts), torch.cat(ends), s.n_best, s.max_answer_length)
            return {**squad.evaluate(examples, preds), "examples": len(examples)}
        preds = []
        for i in range(0, len(examples), s.batch_size):
            b = pair_batch(examples[i:i + s.batch_size], tokenizer, s.max_length)
            preds += model(**model_inputs(b, device)).logits.argmax(-1).tolist()
        labels = [e.label for e in examples]
        out = {"acc": 100 * glue.accuracy(preds, labels), "examples": len(examples)}
        if self.positive_f1:
            out["f1"] = 100 * glue.f1_positive(preds, labels)
        return out

    def evaluate(self, loaded: Loaded, device: torch.device, label: str) -> Evaluation:
        full = self.all_eval_sets()
        metrics = {name: {**self.score(loaded.model, loaded.tokenizer, ex, device), "of": len(full[name])}
                   for name, ex in self.eval_sets(full).items()}
        head = self.headline(metrics)
        return Evaluation({self.name: {**metrics, "headline": head, "flags": []}}, head)


def pair_batch(examples: list[glue.PairExample], tokenizer, max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], truncation=True,
                    max_length=max_length, padding="longest", return_tensors="pt")
    enc["labels"] = torch.tensor([e.label for e in examples])
    return dict(enc)
