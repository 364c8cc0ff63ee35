"""The student: the teacher with fewer layers, initialised from chosen teacher layers."""
from __future__ import annotations

import copy

from torch import nn

from methods.core.surgery import delete_blocks

INITS = ("every_other", "first", "skip", "last")


def student_layers(teacher_layers: int, student_layers: int, init: str) -> list[int]:
    """The teacher layers (0-based) the student's layers start from.

    every_other (DistilBERT, "one layer out of two"), skip (PKD-skip: at uniform intervals,
    ending on the top layer), first (PKD's "first k"), last (the top k)."""
    lt, ls = teacher_layers, student_layers
    if not 0 < ls <= lt:
        raise ValueError(f"a student of {ls} layers from a teacher of {lt}: need 1 <= student <= teacher layers")
    if init == "every_other":
        return [i * lt // ls for i in range(ls)]
    if init == "skip":
        return [(i + 1) * lt // ls - 1 for i in range(ls)]
    if init == "first":
        return list(range(ls))
    if init == "last":
        return list(range(lt - ls, lt))
    raise ValueError(f"unknown student init '{init}'; known: {', '.join(INITS)}")


def kept_layers(teacher_layers: int, rate: float) -> int:
    """The student's depth for the survey's rate (the fraction of the teacher's layers removed)."""
    ls = round(teacher_layers * (1 - rate))
    if not 0 < ls < teacher_layers:
        raise ValueError(f"layer rate {rate} of a {teacher_layers}-layer teacher leaves {ls} layers; "
                         f"pick a rate in (0, 1) that removes at least one layer and keeps one")
    return ls


def make_student(teacher: nn.Module, family, keep: list[int]) -> nn.Module:
    """A copy of the teacher holding only the layers in `keep` (embeddings and task head kept)."""
    student = copy.deepcopy(teacher)
    n = len(family.blocks(student))
    delete_blocks(student, family, [i for i in range(n) if i not in keep])
    return student.requires_grad_(True)
