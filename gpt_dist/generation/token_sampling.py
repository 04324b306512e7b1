"""Choosing the next token from logits: repetition penalty, temperature, top-k, top-p.

Temperature 0 is greedy (argmax), so a run is deterministic whatever the seed. The order of
the steps is the one Hugging Face's `generate` applies: penalty, temperature, top-k, top-p.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gpt_dist.errors import UserError


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.8  # 0 = greedy
    top_k: int | None = 200  # keep the k most likely tokens (None / 0 = all)
    top_p: float | None = None  # keep the smallest set whose probability reaches p (None / 1.0 = all)
    # > 1 makes tokens already in the prompt or the output less likely (CTRL, Keskar et al. 2019).
    repetition_penalty: float = 1.0
    seed: int | None = None

    def validate(self) -> SamplingParams:
        """Raise UserError naming the command-line flag when a value is out of range."""
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens: must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UserError(f"--temperature: must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise UserError(f"--top-k: must be >= 0 (0 = no limit), got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise UserError(f"--top-p: must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise UserError(f"--repetition-penalty: must be > 0 (1.0 = none), got {self.repetition_penalty}")
        return self


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V); seen (B, V) bool, the tokens already in each sequence. Positive logits of
    seen tokens are divided by `penalty`, negative ones multiplied, so both become less likely."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def next_token(
    logits: torch.Tensor, seen: torch.Tensor, p: SamplingParams, generator: torch.Generator | None
) -> torch.Tensor:
    """(B,) next token ids from (B, V) logits of the last position."""
    logits = apply_repetition_penalty(logits.float(), seen, p.repetition_penalty)
    if p.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / p.temperature
    if p.top_k:
        k = min(p.top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p is not None and p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens before it already reach top_p (the first one always stays)
        drop = (probs.cumsum(dim=-1) - probs) >= p.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
