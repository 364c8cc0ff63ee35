"""SQuAD v1.1 (fine-tune on train, EM/F1 on dev) and `squad_dev_split`, the documented offline
variant: fine-tune on the even-numbered SQuAD dev articles, evaluate on the odd ones. Records and
tables carry its name, so it is never confused with the SQuAD protocol."""
from __future__ import annotations

from eval import squad
from eval.tasks.base import Column, register_task
from eval.tasks.encoder import EncoderTask


@register_task("squad")
class SQuAD(EncoderTask):
    metric = "official SQuAD v1.1 F1"
    column = Column("squad", "SQuAD", "F1")
    is_qa = True

    def train_examples(self) -> list:
        return squad.load_squad(self.data, "train")

    def all_eval_sets(self) -> dict[str, list]:
        return {"dev": squad.load_squad(self.data, "validation")}

    def headline(self, metrics) -> float:
        return next(iter(metrics.values()))["f1"]

    def data_files(self) -> dict[str, str]:
        return {"squad.train": squad.SQUAD_TRAIN, "squad.dev": squad.SQUAD_DEV}


@register_task("squad_dev_split")
class SQuADDevSplit(SQuAD):
    column = Column("squad", "SQuAD", "F1", note="squad = squad_dev_split (offline variant: dev articles halved), F1")

    def train_examples(self) -> list:
        return squad.squad_dev_split(squad.load_squad(self.data, "validation"))[0]

    def all_eval_sets(self) -> dict[str, list]:
        return {"dev_half": squad.squad_dev_split(squad.load_squad(self.data, "validation"))[1]}

    def data_files(self) -> dict[str, str]:
        return {"squad.dev": squad.SQUAD_DEV}
