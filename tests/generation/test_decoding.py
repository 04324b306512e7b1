"""Batched decoding: the KV cache changes nothing, a batch equals its prompts one by one, and
generation stops at end-of-text, max_new_tokens or the block size, saying which."""

from __future__ import annotations

import pytest
import torch
from generation_helpers import VOCAB, random_model

from gpt_dist.errors import UserError
from gpt_dist.generation.decoding import generate
from gpt_dist.generation.token_sampling import SamplingParams

EOT = VOCAB - 1
PROMPTS = [[5, 17, 3], [40, 2, 9, 11, 70, 8, 1], [33], [60, 61, 62, 63, 64]]


def greedy(n=12, **kw):
    return SamplingParams(temperature=0, max_new_tokens=n, **kw)


@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize("params", [
    greedy(),
    SamplingParams(temperature=1.0, top_k=20, top_p=0.9, max_new_tokens=12, seed=3),
    greedy(repetition_penalty=1.5),
], ids=["greedy", "sampled", "penalty"])
def test_with_and_without_kv_cache_the_tokens_are_the_same(impl, params):
    model = random_model(impl)
    cached = generate(model, PROMPTS, params, EOT, use_cache=True)
    full = generate(model, PROMPTS, params, EOT, use_cache=False)
    assert [g.tokens for g in cached] == [g.tokens for g in full]
    assert all(len(g.tokens) > 0 for g in cached)


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_batched_prompts_give_what_each_gives_alone(impl):
    model = random_model(impl)
    batched = generate(model, PROMPTS, greedy(), EOT)
    alone = [generate(model, [p], greedy(), EOT)[0] for p in PROMPTS]
    assert [g.tokens for g in batched] == [g.tokens for g in alone]
    assert [g.finish_reason for g in batched] == [g.finish_reason for g in alone]


def test_stops_at_end_of_text_without_emitting_it():
    model = random_model()
    params = SamplingParams(temperature=1.0, top_k=0, max_new_tokens=12, seed=5)
    free = generate(model, [PROMPTS[0]], params, eot_id=VOCAB + 5)[0].tokens  # an id it never produces
    stop_at = next(i for i, t in enumerate(free) if t not in free[:i] and i >= 2)
    out = generate(model, [PROMPTS[0]], params, eot_id=free[stop_at])[0]
    assert out.tokens == free[:stop_at] and out.finish_reason == "eot"


def test_finish_reasons_for_length_and_context():
    model = random_model()  # block_size 64
    assert generate(model, [PROMPTS[0]], greedy(n=5), VOCAB + 5)[0].finish_reason == "length"
    near_full = list(range(60))
    out = generate(model, [near_full], greedy(n=10), VOCAB + 5)[0]
    assert len(out.tokens) == 4 and out.finish_reason == "context"


def test_unusable_prompts_are_user_errors():
    model = random_model()
    with pytest.raises(UserError, match="prompt 2 is empty"):
        generate(model, [[1], []], greedy(), EOT)
    with pytest.raises(UserError, match="prompt 1 has 64 tokens; the model reads at most 64"):
        generate(model, [list(range(64))], greedy(), EOT)


def test_seeded_sampling_is_reproducible():
    model = random_model()
    p = SamplingParams(temperature=1.0, top_k=0, max_new_tokens=16, seed=11)
    a = generate(model, PROMPTS, p, EOT)
    b = generate(model, PROMPTS, p, EOT)
    c = generate(model, PROMPTS, SamplingParams(temperature=1.0, top_k=0, max_new_tokens=16, seed=12), EOT)
    assert [g.tokens for g in a] == [g.tokens for g in b] != [g.tokens for g in c]
    torch.manual_seed(0)  # greedy ignores the seed
    assert generate(model, PROMPTS, greedy(seed=1), EOT) == generate(model, PROMPTS, greedy(seed=2), EOT)
