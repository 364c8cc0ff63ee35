"""Training objectives shared by the methods that fine-tune while they compress (pruning, QAT,
low rank, adaptors) and by the fine-tunes of the task baselines: the task loss plus logit
distillation from the frozen fine-tuned teacher."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.core.outputs import task_logits


def label_loss(student_out, teacher_out, batch) -> torch.Tensor:
    """The task's own loss on its labels (the model computes it from the batch's targets)."""
    return student_out.loss


def logit_kl(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/τ) ‖ softmax(s/τ))·τ², averaged over the rows (Hinton et al.)."""
    s, t = s.float() / temperature, t.float() / temperature
    return F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True,
                    reduction="batchmean") * temperature ** 2


def kd_loss(s_out, t_out, temperature: float) -> torch.Tensor:
    """KL between the teacher's and the student's softened predictions (per token for an LM)."""
    terms = [logit_kl(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), temperature)
             for a, b in zip(task_logits(s_out), task_logits(t_out))]
    return torch.stack(terms).mean()


def prediction_loss(s_out, t_out, distill: float, temperature: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """task loss + distill · KD (the teacher's outputs, when there is a teacher)."""
    loss, parts = s_out.loss, {"task": s_out.loss.detach()}
    if t_out is not None and distill:
        kd = kd_loss(s_out, t_out, temperature)
        loss, parts["kd"] = loss + distill * kd, kd.detach()
    return loss, parts
