"""Next-token choice: greedy at temperature 0, top-k / top-p limits, the repetition penalty,
and out-of-range settings reported with the flag to change."""

from __future__ import annotations

import pytest
import torch

from gpt_dist.errors import UserError
from gpt_dist.generation.token_sampling import SamplingParams, apply_repetition_penalty, next_token

LOGITS = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0], [0.0, 0.1, 0.2, 5.0, -2.0]])
NONE_SEEN = torch.zeros(2, 5, dtype=torch.bool)


def sample_many(params, n=300, seen=NONE_SEEN):
    g = torch.Generator().manual_seed(0)
    return torch.stack([next_token(LOGITS, seen, params, g) for _ in range(n)])  # (n, 2)


def test_temperature_zero_is_argmax():
    assert next_token(LOGITS, NONE_SEEN, SamplingParams(temperature=0), None).tolist() == [4, 3]


def test_top_k_keeps_only_the_k_most_likely():
    draws = sample_many(SamplingParams(temperature=1.0, top_k=2))
    assert set(draws[:, 0].tolist()) == {4, 0} and set(draws[:, 1].tolist()) <= {3, 2}
    assert sample_many(SamplingParams(temperature=1.0, top_k=1)).unique(dim=0).tolist() == [[4, 3]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = LOGITS[0].softmax(-1)  # token 4: 0.61, token 0: 0.22, token 1: 0.08, ...
    assert probs[4] > 0.5 and probs[4] + probs[0] > 0.8
    draws = sample_many(SamplingParams(temperature=1.0, top_k=0, top_p=0.8))
    assert set(draws[:, 0].tolist()) == {4, 0}
    assert set(sample_many(SamplingParams(temperature=1.0, top_k=0, top_p=0.01))[:, 0].tolist()) == {4}


def test_repetition_penalty_lowers_seen_tokens_whatever_their_sign():
    seen = torch.tensor([[True, False, False, True, True], [False] * 5])
    out = apply_repetition_penalty(LOGITS, seen, 2.0)
    assert out[0].tolist() == [1.0, 1.0, 0.5, -2.0, 1.5] and torch.equal(out[1], LOGITS[1])
    # 4.0: token 4 falls to 0.75 and token 1 (1.0, unseen) wins
    assert next_token(LOGITS, seen, SamplingParams(temperature=0, repetition_penalty=4.0), None).tolist() == [1, 3]


@pytest.mark.parametrize("field, value, flag", [
    ("max_new_tokens", 0, "--max-new-tokens"), ("temperature", -0.1, "--temperature"), ("top_k", -1, "--top-k"),
    ("top_p", 0.0, "--top-p"), ("top_p", 1.5, "--top-p"), ("repetition_penalty", 0.0, "--repetition-penalty"),
])
def test_out_of_range_settings_name_the_flag(field, value, flag):
    with pytest.raises(UserError, match=f"^{flag}: "):
        SamplingParams(**{field: value}).validate()
