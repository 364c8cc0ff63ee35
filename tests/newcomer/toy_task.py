"""A newcomer's task, kept beside the tests (a real one lives under eval/tasks/): a GLUE-style
pair classification built from the offline SQuAD v1.1 dev file as QNLI was built from SQuAD
(Wang et al. 2019): a question with the sentence of its context that holds the answer (label 1)
or with the next sentence of that context (label 0). The even articles train, the odd ones
evaluate (as `squad_dev_split`). A toy: its own column, never a survey row."""
from __future__ import annotations

import re

from eval import squad
from eval.glue import PairExample
from eval.tasks.base import Column, register_task
from eval.tasks.encoder import EncoderTask


def sentences(text: str) -> list[tuple[int, str]]:
    """(start offset, sentence) of each sentence, split after '.', '!' or '?' and a space."""
    out, start = [], 0
    for m in re.finditer(r"(?<=[.!?])\s+", text):
        out.append((start, text[start:m.start()]))
        start = m.end()
    return out + [(start, text[start:])]


def pairs(examples: list[squad.QAExample]) -> list[PairExample]:
    out = []
    for ex in examples:
        sents = sentences(ex.context)
        at = max(i for i, (s, _) in enumerate(sents) if s <= ex.answer_starts[0])
        if len(sents) < 2:
            continue
        other = at + 1 if at + 1 < len(sents) else at - 1
        out += [PairExample(ex.question, sents[at][1], 1), PairExample(ex.question, sents[other][1], 0)]
    return out


@register_task("qnli_squad")
class QNLIFromSQuAD(EncoderTask):
    metric = "accuracy (question, sentence holds the answer)"
    column = Column("qnli_squad", "QNLI-S", "accuracy", note="qnli_squad: a pair task built from the SQuAD dev file")
    num_labels = 2

    def _halves(self):
        return squad.squad_dev_split(squad.load_squad(self.data, "validation"))

    def train_examples(self) -> list:
        return pairs(self._halves()[0])

    def all_eval_sets(self) -> dict[str, list]:
        return {"dev_half": pairs(self._halves()[1])}

    def headline(self, metrics) -> float:
        return metrics["dev_half"]["acc"]

    def data_files(self) -> dict[str, str]:
        return {"squad.dev": squad.SQUAD_DEV}
