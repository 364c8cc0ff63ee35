"""LLM-QAT (Liu et al., 2023) [102]: data-free quantization-aware training of a decoder. The
full-precision model writes its own training text, and the quantized model is distilled toward
it on that text; weights, activations and the KV cache are quantized:

    data: each sequence starts from a token drawn uniformly from the vocabulary; the next
          `greedy_tokens` tokens are the model's top-1, the rest sampled from its distribution
    Q_w: symmetric min-max per output channel;  Q_a: symmetric per token;  Q_kv: symmetric per
         token on the key and value projections' outputs (what the cache stores)
    L = KL(p_teacher ‖ p_student) over every position (the teacher's soft labels)

Table 5's row (LLaMA-30B, W4 against 32 bits: 87.5%). The generated corpus is CPU-sized here
(`nsamples` × `length` tokens; the paper generates 100k sequences of 1024)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import TrainingInputs, register
from methods.core.hooks import attach
from methods.quantization.act_quant import quantize_per_token
from methods.quantization.trained.fake_quant import ActQuant, FakeQuantLinear, UniformWeight, WeightQuantizer
from methods.quantization.trained.qat import QATMethod
from methods.core.settings import Bits, Count, Positive


@torch.no_grad()
def self_generated(model: nn.Module, vocab: int, nsamples: int, length: int, greedy_tokens: int, batch_size: int,
                   seed: int, device: torch.device) -> torch.Tensor:
    """(nsamples, length) token ids written by `model` itself (LLM-QAT's next-token data)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    model.eval()
    for start in range(0, nsamples, batch_size):
        n = min(batch_size, nsamples - start)
        ids = torch.randint(vocab, (n, 1), generator=g).to(device)
        past = None
        step_ids = ids
        while ids.shape[1] < length:
            res = model(input_ids=step_ids, past_key_values=past, use_cache=True)
            past, logits = res.past_key_values, res.logits[:, -1].float()
            if ids.shape[1] <= greedy_tokens:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                probs = torch.softmax(logits, -1).cpu()
                nxt = torch.multinomial(probs, 1, generator=g).to(device)
            ids, step_ids = torch.cat([ids, nxt], 1), nxt
        out.append(ids.cpu())
    return torch.cat(out)


class KVQuantLinear(FakeQuantLinear):
    """A key or value projection whose outputs (the cached keys / values) are quantized per token."""

    def __init__(self, linear: nn.Linear, weight_q: WeightQuantizer, act_q: ActQuant | None, kv_bits: Bits):
        super().__init__(linear, weight_q, act_q)
        self.kv_bits = kv_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y + (quantize_per_token(y.detach(), self.kv_bits) - y).detach()

    @torch.no_grad()
    def freeze(self) -> nn.Linear:
        linear = super().freeze()
        bits = self.kv_bits
        attach(linear, "kv_quant", lambda _m, _a, y: quantize_per_token(y, bits), pre=False)
        return linear


@register("llm_qat")
class LLMQAT(QATMethod):
    """`wbits`/`abits`/`kv_bits` (16: not quantized); `nsamples`, `length`, `greedy_tokens`: the
    self-generated corpus; `temperature`: of the distillation."""
    smoke = ({"nsamples": 4, "length": 16},)

    roles = ("decoder",)

    def __init__(self, wbits: Bits = 4, abits: Bits = 8, kv_bits: Bits = 8, nsamples: Count = 64, length: int = 128,
                 greedy_tokens: int = 4, temperature: Positive = 1.0, preset: str = "llm_qat", **kw: Any):
        super().__init__(preset=preset, label="LLM-QAT", ref="102", wbits=wbits, abits=abits, embeddings=False,
                         distill=1.0, temperature=temperature, tables=("table5",), **kw)
        self.kv_bits, self.nsamples, self.length, self.greedy_tokens = kv_bits, nsamples, length, greedy_tokens
        self._kv: set[str] = set()

    def weight_quantizer(self, key: str, weight: torch.Tensor) -> WeightQuantizer:
        return UniformWeight(self.wbits, sym=True, per="channel")

    def act_quantizer(self, key: str) -> ActQuant | None:
        return ActQuant(self.abits, "dynamic") if self.abits < 16 else None

    def quantize(self, model: nn.Module, family):
        self._kv = set(family.sequential[0][1:3]) if self.kv_bits < 16 else set()
        return super().quantize(model, family)

    def make_linear(self, key: str, linear: nn.Linear) -> FakeQuantLinear:
        wq, aq = self.weight_quantizer(key, linear.weight), self.act_quantizer(key)
        if key.split(".", 1)[1] in self._kv:
            return KVQuantLinear(linear, wq, aq, self.kv_bits)
        return FakeQuantLinear(linear, wq, aq)

    def train(self, model: nn.Module, family, inputs: TrainingInputs) -> None:
        from methods.training.objectives import kd_loss
        teacher = inputs.teacher
        device = next(teacher.parameters()).device
        ids = self_generated(teacher, teacher.config.vocab_size, self.nsamples, self.length, self.greedy_tokens,
                             inputs.trainer.cfg.batch_size, inputs.trainer.cfg.seed, device)
        bs = inputs.trainer.cfg.batch_size
        batches = [{"input_ids": ids[i:i + bs], "use_cache": False} for i in range(0, ids.shape[0], bs)]

        def loss(s, t, batch):
            kd = kd_loss(s, t, self.temperature)
            return kd, {"kd": kd.detach()}
        result = inputs.trainer.fit(model, lambda epoch: batches, loss, teacher=teacher, name="llm_qat")
        inputs.fits.append(result)
        self.facts["generated"] = {"sequences": int(ids.shape[0]), "length": int(ids.shape[1]),
                                   "greedy_tokens": self.greedy_tokens}

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "kv_bits": self.kv_bits if self.kv_bits < 16 else None,
                "data": "self-generated (data-free)"}
