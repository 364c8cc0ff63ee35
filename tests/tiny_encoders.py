"""Small randomly initialised encoders for unit tests of training-based methods (no download)."""
from __future__ import annotations

import torch


def tiny_bert(layers: int = 4, qa: bool = False, seed: int = 0, dropout: float = 0.1):
    from transformers import BertConfig, BertForQuestionAnswering, BertForSequenceClassification
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2 if qa else 3,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return (BertForQuestionAnswering if qa else BertForSequenceClassification)(cfg).eval()


def batches(n: int, size: int = 4, length: int = 12, seed: int = 0, qa: bool = False) -> list[dict]:
    """Random token batches with padding in the last positions of half the rows, and labels."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 100, (size, length), generator=g)
        mask = torch.ones(size, length, dtype=torch.long)
        mask[size // 2:, -3:] = 0
        b = {"input_ids": ids * mask, "attention_mask": mask}
        if qa:
            b["start_positions"] = torch.randint(0, length - 3, (size,), generator=g)
            b["end_positions"] = b["start_positions"] + 1
        else:
            b["labels"] = torch.randint(0, 3, (size,), generator=g)
        out.append(b)
    return out
