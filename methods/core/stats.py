"""Per-linear input statistics gathered with forward hooks during calibration forwards."""
from __future__ import annotations

import torch

HESSIAN = "hessian"        # H = 2/N Σ x xᵀ (SparseGPT/GPTQ), N = number of calibration sequences
ACT_SQ = "act_sq"          # Σ_tokens x_j² / N (Wanda's `scaler_row`; ‖X_j‖₂ = sqrt(N · act_sq_j))
ACT_ABSMAX = "act_absmax"  # max_tokens |x_j| (SmoothQuant, static activation ranges)
ACT_ABSMEAN = "act_absmean"  # mean_tokens |x_j| (AWQ's activation salience)
INPUTS = "inputs"          # the raw input rows themselves (AWQ's scale and clipping searches)
ACT_RANGE = "act_range"    # (max_tokens x_j, min_tokens x_j) per input channel (RPTQ's clustering)
KINDS = (HESSIAN, ACT_SQ, ACT_ABSMAX, ACT_ABSMEAN, INPUTS, ACT_RANGE)


class LinearStats:
    """Running sums over the calibration tokens seen by one linear layer."""

    def __init__(self, in_features: int, kinds: frozenset[str], device: torch.device):
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown statistics {sorted(unknown)}; known: {KINDS}")
        self.kinds = kinds
        self.nsamples = 0
        self.ntokens = 0
        self._xtx = torch.zeros(in_features, in_features, device=device) if HESSIAN in kinds else None
        self._sq = torch.zeros(in_features, device=device) if ACT_SQ in kinds else None
        self._absmax = torch.zeros(in_features, device=device) if ACT_ABSMAX in kinds else None
        self._abssum = torch.zeros(in_features, device=device) if ACT_ABSMEAN in kinds else None
        self._rows: list[torch.Tensor] | None = [] if INPUTS in kinds else None
        self._max = torch.full((in_features,), -torch.inf, device=device) if ACT_RANGE in kinds else None
        self._min = torch.full((in_features,), torch.inf, device=device) if ACT_RANGE in kinds else None

    def add_batch(self, inp: torch.Tensor) -> None:
        """`inp`: the layer input of a batch of sequences, (batch, tokens, in) or (tokens, in)."""
        if inp.dim() == 2:
            inp = inp.unsqueeze(0)
        self.nsamples += inp.shape[0]
        x = inp.reshape(-1, inp.shape[-1]).float()
        self.ntokens += x.shape[0]
        if self._xtx is not None:
            self._xtx.addmm_(x.t(), x)
        if self._sq is not None:
            self._sq.add_(x.pow(2).sum(0))
        if self._absmax is not None:
            torch.maximum(self._absmax, x.abs().amax(0), out=self._absmax)
        if self._abssum is not None:
            self._abssum.add_(x.abs().sum(0))
        if self._rows is not None:
            self._rows.append(inp.reshape(-1, inp.shape[-1]).clone())
        if self._max is not None:
            torch.maximum(self._max, x.amax(0), out=self._max)
            torch.minimum(self._min, x.amin(0), out=self._min)

    @property
    def hessian(self) -> torch.Tensor:
        return self._xtx * (2.0 / self.nsamples)

    @property
    def act_sq(self) -> torch.Tensor:
        return self._sq / self.nsamples

    @property
    def act_absmax(self) -> torch.Tensor:
        return self._absmax

    @property
    def act_absmean(self) -> torch.Tensor:
        return self._abssum / self.ntokens

    @property
    def act_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-channel max, per-channel min) over the calibration tokens."""
        return self._max, self._min

    @property
    def inputs(self) -> torch.Tensor:
        """All input rows seen, (tokens, in), in the layer's dtype."""
        if len(self._rows) > 1:
            self._rows = [torch.cat(self._rows)]
        return self._rows[0]
