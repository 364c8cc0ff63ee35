"""GLUE pair tasks of the survey's encoder tables: MNLI (accuracy on dev matched, the headline,
and mismatched) and QQP (accuracy, the headline, and F1 with positive = duplicate)."""
from __future__ import annotations

from eval import glue
from eval.tasks.base import Column, register_task
from eval.tasks.encoder import EncoderTask


@register_task("mnli")
class MNLI(EncoderTask):
    metric = "MNLI matched accuracy"
    column = Column("mnli", "MNLI", "matched accuracy")
    num_labels = 3

    def train_examples(self) -> list:
        return glue.load_glue(self.data, "mnli", "train")

    def all_eval_sets(self) -> dict[str, list]:
        return {"matched": glue.load_glue(self.data, "mnli", "validation_matched"),
                "mismatched": glue.load_glue(self.data, "mnli", "validation_mismatched")}

    def headline(self, metrics) -> float:
        return metrics["matched"]["acc"]

    def data_files(self) -> dict[str, str]:
        return {f"mnli.{split}": glue.GLUE_FILES[("mnli", split)]
                for split in ("train", "validation_matched", "validation_mismatched")}


@register_task("qqp")
class QQP(EncoderTask):
    metric = "QQP accuracy"
    column = Column("qqp", "QQP", "accuracy")
    positive_f1 = True
    num_labels = 2

    def train_examples(self) -> list:
        return glue.load_glue(self.data, "qqp", "train")

    def all_eval_sets(self) -> dict[str, list]:
        return {"dev": glue.load_glue(self.data, "qqp", "validation")}

    def headline(self, metrics) -> float:
        return metrics["dev"]["acc"]

    def data_files(self) -> dict[str, str]:
        return {f"qqp.{split}": glue.GLUE_FILES[("qqp", split)] for split in ("train", "validation")}
