"""Extractive-QA features the standard way (BERT / HF `run_qa`): question + context windows of
`max_length` tokens with `doc_stride` overlap, answer spans as token positions (the [CLS]
index when a window does not hold the answer), and n-best span decoding back to text."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eval.squad import QAExample


@dataclass
class QAFeatures:
    input_ids: torch.Tensor        # (features, max_length)
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    example_index: list[int]       # the example each window belongs to
    offsets: list[list[tuple[int, int] | None]]  # character span of each context token (None elsewhere)
    start_positions: torch.Tensor | None = None  # training targets
    end_positions: torch.Tensor | None = None


def prepare_features(examples: list[QAExample], tokenizer, max_length: int = 384, doc_stride: int = 128,
                     with_targets: bool = False) -> QAFeatures:
    """Tokenize (question, context) pairs into overlapping windows; targets from the first answer."""
    pad_right = tokenizer.padding_side == "right"
    enc = tokenizer([ex.question.lstrip() for ex in examples], [ex.context for ex in examples],
                    truncation="only_second" if pad_right else "only_first", max_length=max_length,
                    stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length", return_tensors="pt")
    sample_map = enc.pop("overflow_to_sample_mapping").tolist()
    offsets, starts, ends = [], [], []
    for i, ex_idx in enumerate(sample_map):
        seq_ids = enc.sequence_ids(i)
        ctx_id = 1 if pad_right else 0
        offs = [tuple(o) if seq_ids[k] == ctx_id else None for k, o in enumerate(enc["offset_mapping"][i].tolist())]
        offsets.append(offs)
        if with_targets:
            s, e = _answer_tokens(examples[ex_idx], offs, int((enc["input_ids"][i] == tokenizer.cls_token_id)
                                                              .nonzero()[0]))
            starts.append(s)
            ends.append(e)
    return QAFeatures(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"), sample_map, offsets,
                      torch.tensor(starts) if with_targets else None, torch.tensor(ends) if with_targets else None)


def _answer_tokens(ex: QAExample, offs: list[tuple[int, int] | None], cls_index: int) -> tuple[int, int]:
    start_char = ex.answer_starts[0]
    end_char = start_char + len(ex.answers[0])
    ctx = [k for k, o in enumerate(offs) if o is not None]
    if not ctx or offs[ctx[0]][0] > start_char or offs[ctx[-1]][1] < end_char:
        return cls_index, cls_index
    s = next(k for k in ctx if offs[k][1] > start_char)
    e = next(k for k in reversed(ctx) if offs[k][0] < end_char)
    return s, e


def decode(examples: list[QAExample], feats: QAFeatures, start_logits: torch.Tensor, end_logits: torch.Tensor,
           n_best: int = 20, max_answer_length: int = 30) -> dict[str, str]:
    """Best-scoring valid span per example over all its windows (score = start + end logit)."""
    best: dict[int, tuple[float, str]] = {}
    for f, ex_idx in enumerate(feats.example_index):
        offs = feats.offsets[f]
        s_top = torch.argsort(start_logits[f], descending=True)[:n_best].tolist()
        e_top = torch.argsort(end_logits[f], descending=True)[:n_best].tolist()
        for s in s_top:
            for e in e_top:
                if offs[s] is None or offs[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start_logits[f, s] + end_logits[f, e])
                if ex_idx not in best or score > best[ex_idx][0]:
                    best[ex_idx] = (score, examples[ex_idx].context[offs[s][0]:offs[e][1]])
    return {ex.id: best.get(i, (0.0, ""))[1] for i, ex in enumerate(examples)}
