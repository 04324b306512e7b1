"""The KV cache: decoding position by position gives the logits of one full forward pass."""

from __future__ import annotations

import pytest
import torch
from generation_helpers import VOCAB, random_model

from gpt_dist.generation.decoding import left_pad
from gpt_dist.model.gpt import KVCache


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_incremental_decoding_matches_the_full_forward(impl):
    model = random_model(impl)
    x = torch.randint(0, VOCAB, (2, 20))
    with torch.no_grad():
        full = model(x)
        cache = KVCache(model.config, 2, 20, "cpu", torch.float32)
        steps = [model(x[:, :8], kv_cache=cache)]  # prefill 8, then 12 one by one
        steps += [model(x[:, t : t + 1], kv_cache=cache) for t in range(8, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)
    assert cache.length == 20


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_left_padded_rows_with_a_cache_match_each_prompt_alone(impl):
    model = random_model(impl)
    prompts = [torch.randint(0, VOCAB, (n,)).tolist() for n in (3, 9, 6)]
    ids, seg, pos = left_pad(prompts, pad_id=0, device="cpu")
    cont = torch.randint(0, VOCAB, (3, 4))
    with torch.no_grad():
        cache = KVCache(model.config, 3, ids.shape[1] + 4, "cpu", torch.float32)
        model(ids, segment_ids=seg, position_ids=pos, kv_cache=cache)
        next_pos = torch.tensor([[len(p)] for p in prompts])
        batched = [model(cont[:, t : t + 1], segment_ids=torch.ones(3, 1, dtype=torch.long),
                         position_ids=next_pos + t, kv_cache=cache) for t in range(4)]
        batched = torch.cat(batched, dim=1)
        for b, p in enumerate(prompts):
            alone = model(torch.cat([torch.tensor([p]), cont[b : b + 1]], dim=1))[:, len(p):]
            torch.testing.assert_close(batched[b : b + 1], alone, rtol=0, atol=1e-5)


def test_cache_limits_are_errors():
    model = random_model()
    with pytest.raises(ValueError, match="exceeds model.block_size"):
        KVCache(model.config, 1, model.config.block_size + 1, "cpu", torch.float32)
    cache = KVCache(model.config, 1, 10, "cpu", torch.float32)
    with torch.no_grad():
        model(torch.zeros(1, 8, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match="KV cache holds 10 positions; 8 cached \\+ 4 new"):
            model(torch.zeros(1, 4, dtype=torch.long), kv_cache=cache)
