"""Knowledge distillation into a shallower copy of the teacher (Table 6).

    student  <- the fine-tuned teacher with (1 − rate)·L of its layers, initialised from
                teacher layers (every other / skip / first / last)
    for each stage (default: one), through the shared trainer:
        minimise Σ_source weight · loss_source(student features, teacher features)
                 (logits, labels, hidden states, attention maps, embeddings, MiniLM relations),
                 intermediate sources matched layer to layer (1:1, many:1, many:many)

Each Table 6 row is a preset of this method (conf/method/<preset>.yaml).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from methods.core.base import (CompressionResult, Kind, RateBasis, TableRow, TrainedMethod, TrainingInputs,
                               register)
from methods.core.model_facts import ModelSize
from methods.distillation.losses import SURVEY_LETTER, Objective
from methods.distillation.matching import KINDS, Matching
from methods.distillation.student import INITS, kept_layers, make_student, student_layers
from methods.distillation.taps import Tapped
from methods.core.settings import Fraction, Positive, Seed

NEEDS_QK = ("attention", "relations", "mh_relations")


class _Student(nn.Module):
    """The student's taps and the objective's learned parts: what the trainer optimises."""

    def __init__(self, tapped: Tapped, objective: Objective):
        super().__init__()
        self.tapped, self.objective = tapped, objective

    def set_epoch(self, epoch: int) -> None:
        self.tapped.set_epoch(epoch)

    def forward(self, **batch):
        return self.tapped(**batch)


@register("distill")
class Distill(TrainedMethod):
    physical = True

    def __init__(self, preset: str = "custom", label: str = "KD", ref: str = "", rate: Fraction = 0.5,
                 init: str = "every_other", sources: Mapping[str, float] | None = None,
                 stages: Sequence[Mapping[str, Any]] | None = None, matching: str = "skip",
                 temperature: Positive = 1.0, hidden_tokens: str = "all", hidden_normalize: bool = False,
                 relation_heads: int | None = None, teacher_relation_layer: int = -1,
                 not_run: Sequence[str] = (), seed: Seed = 0):
        if not 0 < rate < 1:
            raise ValueError(f"rate is the fraction of the teacher's layers removed; got {rate}, need 0 < rate < 1")
        if init not in INITS:
            raise ValueError(f"unknown student init '{init}'; known: {', '.join(INITS)}")
        if matching not in KINDS:
            raise ValueError(f"unknown layer matching '{matching}'; known: {', '.join(KINDS)}")
        if stages and sources:
            raise ValueError("give `sources` (one stage) or `stages`, not both")
        self.stages = [dict(s) for s in stages] if stages else [{"sources": dict(sources or {"logits": 1.0}),
                                                                  "fraction": 1.0}]
        for st in self.stages:
            if not st.get("sources"):
                raise ValueError(f"a distillation stage needs sources, got {st}")
        total = sum(float(st.get("fraction", 1.0)) for st in self.stages)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"stage fractions must sum to 1, got {total}")
        self.preset, self.lab, self.ref = preset, label, ref
        self.rate, self.init, self.matching = rate, init, matching
        self.temperature, self.hidden_tokens, self.hidden_normalize = temperature, hidden_tokens, hidden_normalize
        self.relation_heads, self.teacher_relation_layer = relation_heads, teacher_relation_layer
        self.not_run, self.seed = list(not_run), seed
        self.kept: list[int] = []
        self.teacher_layers = 0

    # ---- metadata --------------------------------------------------------------------------------
    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(k for st in self.stages for k, w in st["sources"].items() if w))

    @property
    def survey_sources(self) -> str:
        letters = {SURVEY_LETTER[s] for s in self.sources if s in SURVEY_LETTER}
        return ",".join(x for x in "LHAT" if x in letters)

    @property
    def layer_matching(self) -> str:
        intermediate = any(s in ("hidden", "attention", "embeddings", "relations", "mh_relations")
                           for s in self.sources)
        if not intermediate:
            return "none"
        if set(self.sources) & {"hidden", "attention"}:
            return Matching(self.matching, 1, 1, 1).survey_class
        return "1:1"  # MiniLM's relations: last layer to last layer

    @property
    def rows(self) -> dict[str, TableRow]:
        columns = {"distill_source": self.survey_sources, "layer_matching": self.layer_matching,
                   "preset": self.preset}
        return {"table6": TableRow(self.lab, self.ref, cost="high", columns=columns)}

    def check_family(self, family, config=None) -> None:
        if config is not None:
            kept_layers(config.num_hidden_layers, self.rate)
        if family.attention != "bert" and set(self.sources) & set(NEEDS_QK):
            raise ValueError(f"'{self.preset}' distils attention computed as BERT's softmax(qkᵀ/√d); a "
                             f"'{family.name}' model's attention differs (e.g. DeBERTa's relative terms)")

    # ---- the algorithm ---------------------------------------------------------------------------
    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        teacher_model = inputs.teacher if inputs.teacher is not None else model
        lt = len(family.blocks(teacher_model))
        ls = kept_layers(lt, self.rate)
        self.teacher_layers, self.kept = lt, student_layers(lt, ls, self.init)
        student = make_student(teacher_model, family, self.kept)
        width = teacher_model.config.hidden_size
        steps_total = inputs.trainer.total_steps(len(inputs.data(0)))
        for st in self.stages:
            objective = Objective(st["sources"], Matching(self.matching, ls, lt, width, self.seed),
                                  student.config.hidden_size, width, self.temperature, self.hidden_tokens,
                                  self.hidden_normalize, self.relation_heads, self.teacher_relation_layer)
            wrapped = _Student(Tapped(student, family, objective.qkv_layers(ls, teacher=False)), objective)
            teacher = Tapped(teacher_model, family, objective.qkv_layers(lt, teacher=True))
            steps = max(1, round(float(st.get("fraction", 1.0)) * steps_total))

            def loss(s, t, batch, _w=wrapped):
                return _w.objective(s, t, batch, _w.tapped.epoch)
            needs_teacher = set(st["sources"]) != {"hard"}
            inputs.fit(wrapped, loss, teacher=teacher if needs_teacher else None, steps=steps,
                       evaluate=_unwrap(inputs.evaluate))
        return student.eval()

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        return CompressionResult(Kind.DISTILLED, "L", before, after, rate_basis=RateBasis.LAYERS,
                                 comp_rate=1 - len(self.kept) / self.teacher_layers, facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {"preset": self.preset, "teacher_layers": self.teacher_layers, "student_layers": len(self.kept),
                "init_from_teacher_layers": self.kept, "init": self.init, "sources": self.sources,
                "survey_sources": self.survey_sources, "matching": self.matching,
                "layer_matching": self.layer_matching, "stages": self.stages, "temperature": self.temperature,
                "not_run": self.not_run}


def _unwrap(evaluate):
    """The dev score of a wrapped student is its plain model's."""
    if evaluate is None:
        return None
    return lambda wrapped: evaluate(wrapped.tapped.model)



def distill_same_depth(model: nn.Module, family, inputs: TrainingInputs, sources: Mapping[str, float],
                       temperature: float = 1.0, teacher: nn.Module | None = None, **fit_kw: Any) -> None:
    """Train `model` toward the teacher of the same depth (layer i to layer i), e.g. the recovery
    of a factorised model (Noach & Goldberg 2020). `teacher`: another teacher than the fine-tuned
    model (a stage of multi-step distillation); `fit_kw`: the stage's `steps` and `name`."""
    layers = len(family.blocks(model))
    width = model.config.hidden_size
    objective = Objective(sources, Matching("skip", layers, layers, width), width, width, temperature)
    wrapped = _Student(Tapped(model, family, objective.qkv_layers(layers, teacher=False)), objective)
    tapped = Tapped(teacher if teacher is not None else inputs.teacher, family,
                    objective.qkv_layers(layers, teacher=True))
    inputs.fit(wrapped, lambda s, t, batch: objective(s, t, batch, wrapped.tapped.epoch), teacher=tapped,
               evaluate=_unwrap(inputs.evaluate), **fit_kw)
