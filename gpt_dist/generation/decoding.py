"""Autoregressive decoding with a KV cache, for a batch of prompts of different lengths.

Prompts are left-padded to a common length so every row's next token is at the same column.
Padding is its own attention segment (segment 0, the real tokens are segment 1), so no real
token attends to a pad, and each row's position ids start at 0 at its first real token: a
padded row computes what it would alone. With the KV cache the prompt is run once (prefill)
and then one position per new token; without it the whole sequence is re-run every step
(the reference the cache is tested against).

A row stops at the end-of-text token (not part of the output), after `max_new_tokens`, or
when the model's block_size is full; the reason is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from gpt_dist.errors import UserError
from gpt_dist.generation.token_sampling import SamplingParams, next_token
from gpt_dist.model.gpt import GPT, KVCache

PAD_SEGMENT, TEXT_SEGMENT = 0, 1


@dataclass
class Generated:
    tokens: list[int]  # the new tokens, without the end-of-text
    finish_reason: str  # "eot", "length" (max_new_tokens) or "context" (block_size reached)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, P) input ids, segment ids and position ids of left-padded prompts."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    seg = torch.full((len(prompts), width), PAD_SEGMENT, dtype=torch.long)
    pos = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        n = len(p)
        ids[b, width - n :] = torch.tensor(list(p), dtype=torch.long)
        seg[b, width - n :] = TEXT_SEGMENT
        pos[b, width - n :] = torch.arange(n)
    return ids.to(device), seg.to(device), pos.to(device)


@torch.no_grad()
def generate(
    model: GPT, prompts: Sequence[Sequence[int]], params: SamplingParams, eot_id: int, *, use_cache: bool = True
) -> list[Generated]:
    """New tokens for each prompt (lists of ids), decoded together as one batch."""
    params.validate()
    if not prompts:
        return []
    block = model.config.block_size
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise UserError(f"prompt {i + 1} is empty; give some text to continue")
        if len(p) >= block:
            raise UserError(
                f"prompt {i + 1} has {len(p)} tokens; the model reads at most {block} (its block_size), "
                "leaving no room to generate: shorten the prompt"
            )
    device = next(model.parameters()).device
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    model.eval()
    ids, seg, pos = left_pad(prompts, eot_id, device)
    b, width = ids.shape
    budget = min(params.max_new_tokens, block - width)
    lengths = torch.tensor([len(p) for p in prompts], device=device)  # real tokens so far per row
    seen = torch.zeros(b, model.config.vocab_size, dtype=torch.bool, device=device)  # for the penalty
    for r, p in enumerate(prompts):
        seen[r, torch.tensor(list(p), device=device)] = True

    cache = None
    if use_cache:
        cache = KVCache(model.config, b, width + budget, device, next(model.parameters()).dtype)
        logits = model(ids, segment_ids=seg, position_ids=pos, kv_cache=cache)[:, -1]
    else:
        logits = model(ids, segment_ids=seg, position_ids=pos)[:, -1]
    out: list[list[int]] = [[] for _ in range(b)]
    reason = ["length"] * b
    done = torch.zeros(b, dtype=torch.bool, device=device)
    for step in range(budget):
        tok = next_token(logits, seen, params, generator)
        tok = torch.where(done, torch.full_like(tok, eot_id), tok)
        for r, (t, finished) in enumerate(zip(tok.tolist(), done.tolist())):  # one device sync per step
            if finished:
                continue
            if t == eot_id:
                reason[r] = "eot"
            else:
                out[r].append(t)
        done |= tok == eot_id
        if bool(done.all()) or step == budget - 1:
            break
        seen[torch.arange(b, device=device), tok] = True
        new_pos = (lengths + step)[:, None]  # (B, 1): the position after each row's last token
        new_seg = torch.full((b, 1), TEXT_SEGMENT, dtype=torch.long, device=device)
        if use_cache:
            logits = model(tok[:, None], segment_ids=new_seg, position_ids=new_pos, kv_cache=cache)[:, -1]
        else:
            ids, seg, pos = torch.cat([ids, tok[:, None]], 1), torch.cat([seg, new_seg], 1), torch.cat([pos, new_pos], 1)
            logits = model(ids, segment_ids=seg, position_ids=pos)[:, -1]
    if budget < params.max_new_tokens:
        reason = ["context" if r == "length" else r for r in reason]
    return [Generated(o, r) for o, r in zip(out, reason)]
