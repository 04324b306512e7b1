"""Random tiny models for the generation tests."""

from __future__ import annotations

import torch

from gpt_dist.config import ModelConfig
from gpt_dist.model.gpt import GPT

VOCAB = 97


def random_model(attn_impl: str = "sdpa", seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=VOCAB, vocab_pad_multiple=1, attn_impl=attn_impl)
    cfg.update(kw)
    return GPT(ModelConfig(**cfg)).eval()
