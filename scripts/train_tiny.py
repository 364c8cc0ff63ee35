"""Train a tiny Llama-architecture causal LM and its byte-level BPE tokenizer from local text,
so the default model exists on a machine without the shared checkpoint. Never reads the
WikiText-2 test split."""
from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from methods.core.model_facts import count_params  # noqa: E402


def corpus(cfg: DictConfig) -> str:
    root = Path(cfg.paths.data_root)
    parts = []
    for rel in cfg.text_files:
        if "test" in Path(rel).name:
            raise ValueError(f"refusing to train on a test split: {rel}")
        if (root / rel).is_file():
            parts.append((root / rel).read_text(encoding="utf-8"))
    squad = root / cfg.squad_json if cfg.squad_json else None
    if squad and squad.is_file():
        parts += [p["context"] for a in json.loads(squad.read_text())["data"] for p in a["paragraphs"]]
    if not parts:
        raise FileNotFoundError(f"no training text under {root} (looked for {list(cfg.text_files)}); "
                                f"run `make data` or set paths.data_root")
    return "\n\n".join(parts)


def train_tokenizer(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.split("\n"), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@hydra.main(config_path="../conf", config_name="train_tiny", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    text = corpus(cfg)
    tokenizer = train_tokenizer(text, cfg.vocab_size)
    ids = torch.tensor(tokenizer(text).input_ids)
    config = LlamaConfig(vocab_size=cfg.vocab_size, head_dim=cfg.model.hidden_size // cfg.model.num_attention_heads,
                         num_key_value_heads=cfg.model.num_attention_heads, tie_word_embeddings=False,
                         bos_token_id=0, eos_token_id=1, pad_token_id=2, **cfg.model)
    model = LlamaForCausalLM(config)
    t = cfg.train
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=t.lr, betas=(0.9, 0.95))
    budget, start = t.time_budget_min * 60, time.time()
    model.train()
    for step in range(t.max_steps):
        progress = min(1.0, max(step / t.max_steps, (time.time() - start) / budget))
        lr = t.lr * (step + 1) / t.warmup if step < t.warmup else \
            t.lr * (t.min_lr_frac + (1 - t.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, ids.numel() - t.seqlen - 1, (t.batch_size,))
        batch = torch.stack([ids[s:s + t.seqlen] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e}", flush=True)
        if time.time() - start > budget:
            break
    model.eval()
    out = Path(cfg.out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    print(f"saved {count_params(model):,} parameters to {out}")


if __name__ == "__main__":
    main()
