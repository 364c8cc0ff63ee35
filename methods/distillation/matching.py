"""Layer matching: which teacher layers (1-based) each student layer learns from, and how.

  1:1        skip (uniform intervals, ending on the top layer), last (the top layers)
  many:1     CKD (contiguous buckets of teacher layers, combined by a learned projection of their
             concatenation), ALP-KD (per-input attention over all teacher layers)
  many:many  RAIL-KD (a random sorted subset of teacher layers, drawn anew each epoch),
             BERT-EMD (earth mover's distance: the flow between all layer pairs minimising the
             total distillation cost, uniform layer weights)

`loss(s, t, cost, epoch)` takes the student's and teacher's per-layer tensors (indexable by
1-based layer) and a per-pair cost function, and returns the matched loss.
"""
from __future__ import annotations

import random
from typing import Callable, Mapping, Sequence

import torch
from torch import nn
from methods.core.settings import Seed

Cost = Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor]  # (i, j, student x, teacher target)
KINDS = ("skip", "last", "ckd", "alp", "rail", "emd")
SURVEY_CLASS = {"skip": "1:1", "last": "1:1", "ckd": "many:1", "alp": "many:1", "rail": "many:many", "emd": "many:many"}


def one_to_one(student_layers: int, teacher_layers: int, mode: str) -> dict[int, int]:
    """skip: student layer i <- teacher layer i·Lt/Ls; last: i <- Lt − Ls + i (1-based)."""
    ls, lt = student_layers, teacher_layers
    if mode == "skip":
        return {i: i * lt // ls for i in range(1, ls + 1)}
    if mode == "last":
        return {i: lt - ls + i for i in range(1, ls + 1)}
    raise ValueError(f"unknown 1:1 mapping '{mode}'")


def buckets(student_layers: int, teacher_layers: int) -> dict[int, list[int]]:
    """CKD: the teacher's layers cut into `student_layers` contiguous buckets of near-equal size."""
    ls, lt = student_layers, teacher_layers
    bounds = [round(b * lt / ls) for b in range(ls + 1)]
    return {i: list(range(bounds[i - 1] + 1, bounds[i] + 1)) for i in range(1, ls + 1)}


def rail_layers(student_layers: int, teacher_layers: int, seed: int, epoch: int) -> dict[int, int]:
    """RAIL-KD: `student_layers` teacher layers drawn at random for this epoch, matched in order."""
    rng = random.Random(seed * 100_003 + epoch)
    chosen = sorted(rng.sample(range(1, teacher_layers + 1), student_layers))
    return {i + 1: j for i, j in enumerate(chosen)}


def emd_flow(cost: torch.Tensor) -> torch.Tensor:
    """The earth mover's flow F (Ls x Lt) between uniform layer weights minimising Σ F·cost
    (a transportation linear programme, solved exactly)."""
    from scipy.optimize import linprog

    ls, lt = cost.shape
    a_eq = []
    for i in range(ls):
        row = torch.zeros(ls, lt)
        row[i] = 1
        a_eq.append(row.flatten())
    for j in range(lt):
        col = torch.zeros(ls, lt)
        col[:, j] = 1
        a_eq.append(col.flatten())
    b_eq = [1 / ls] * ls + [1 / lt] * lt
    res = linprog(cost.detach().double().flatten().cpu().numpy(), A_eq=torch.stack(a_eq).numpy(), b_eq=b_eq,
                  bounds=(0, None), method="highs")
    if not res.success:
        raise RuntimeError(f"EMD transport problem failed: {res.message}")
    return torch.tensor(res.x, dtype=cost.dtype, device=cost.device).view(ls, lt)


class Matching(nn.Module):
    """One matching strategy between a student of `ls` layers and a teacher of `lt`."""

    def __init__(self, kind: str, ls: int, lt: int, width: int, seed: Seed = 0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown layer matching '{kind}'; known: {', '.join(KINDS)}")
        self.kind, self.ls, self.lt, self.seed = kind, ls, lt, seed
        if kind == "ckd":
            self.groups = buckets(ls, lt)
            # concatenation -> width; initialised as the bucket's mean
            self.combine = nn.ModuleDict({
                str(i): _mean_projection(len(js), width) for i, js in self.groups.items()})

    @property
    def survey_class(self) -> str:
        return SURVEY_CLASS[self.kind]

    def pairs(self, epoch: int = 0) -> Mapping[int, int]:
        """The 1:1 pairs in force (skip, last, rail)."""
        if self.kind in ("skip", "last"):
            return one_to_one(self.ls, self.lt, self.kind)
        if self.kind == "rail":
            return rail_layers(self.ls, self.lt, self.seed, epoch)
        raise ValueError(f"matching '{self.kind}' is not 1:1")

    def loss(self, s: Sequence[torch.Tensor] | Mapping[int, torch.Tensor],
             t: Sequence[torch.Tensor] | Mapping[int, torch.Tensor], cost: Cost, epoch: int = 0,
             combinable: bool = True) -> torch.Tensor:
        """The matched loss; `combinable`: the tensors may be mixed across teacher layers (hidden
        states can, attention maps cannot: CKD and ALP-KD match hidden states only)."""
        if self.kind in ("skip", "last", "rail"):
            pairs = self.pairs(epoch)
            return torch.stack([cost(i, j, s[i], t[j]) for i, j in pairs.items()]).mean()
        if self.kind == "emd":
            c = torch.stack([torch.stack([cost(i, j, s[i], t[j]) for j in range(1, self.lt + 1)])
                             for i in range(1, self.ls + 1)])
            return (emd_flow(c) * c).sum()
        if not combinable:
            raise ValueError(f"matching '{self.kind}' combines teacher layers and applies to hidden states only")
        terms = []
        for i in range(1, self.ls + 1):
            if self.kind == "ckd":
                target = self.combine[str(i)](torch.cat([t[j] for j in self.groups[i]], dim=-1))
            else:  # alp: attention of the student's [CLS] state over every teacher layer's
                stack = torch.stack([t[j] for j in range(1, self.lt + 1)], dim=1)      # (B, Lt, T, d)
                alpha = torch.softmax(torch.einsum("bd,bld->bl", s[i][:, 0], stack[:, :, 0]), dim=-1)
                target = torch.einsum("bl,bltd->btd", alpha, stack)
            terms.append(cost(i, 0, s[i], target))
        return torch.stack(terms).mean()


def _mean_projection(k: int, width: int) -> nn.Linear:
    proj = nn.Linear(k * width, width, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.cat([torch.eye(width) / k] * k, dim=1))
    return proj
