"""Our GPT and transformers' GPT2LMHeadModel compute the same function once weights are mapped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conversion_helpers import greedy, hf_greedy, random_gpt, random_hf_gpt2, tiny_config
from transformers import GPT2LMHeadModel

from gpt_dist.checkpoint.state_dict_adapter import (
    LM_HEAD,
    from_hf_tensor,
    hf_config,
    model_config_from_hf,
    our_name,
    pad_vocab,
    param_shapes,
    to_hf_tensor,
)
from gpt_dist.errors import CheckpointError
from gpt_dist.model.gpt import GPT


def _ours_to_hf(model: GPT) -> GPT2LMHeadModel:
    cfg = model.config
    hf = GPT2LMHeadModel(hf_config(cfg, eot_id=50256, dtype=torch.float32)).eval()
    state = {k: to_hf_tensor(k, v, cfg) for k, v in model.state_dict().items() if k != LM_HEAD}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert set(missing) <= {LM_HEAD} and not unexpected  # the head is tied to wte
    return hf


def _hf_to_ours(hf: GPT2LMHeadModel) -> GPT:
    cfg = model_config_from_hf(hf.config.to_dict(), Path("config.json"))
    state = {}
    for k, v in hf.state_dict().items():
        name = our_name(k)
        if name is not None and name != LM_HEAD:
            state[name] = from_hf_tensor(name, v)
    model = GPT(cfg).eval()
    model.load_state_dict(pad_vocab(state, cfg))  # strict: every weight accounted for
    return model


def test_our_model_in_transformers_gives_the_same_logits_and_tokens():
    cfg = tiny_config()
    assert cfg.padded_vocab_size > cfg.vocab_size  # the padding rows are really sliced off
    ours = random_gpt(cfg, seed=3)
    hf = _ours_to_hf(ours)
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(idx) - hf(idx).logits).abs().max().item()
    assert diff < 1e-5
    prompt = idx[:, :8]
    assert torch.equal(greedy(ours, prompt, 24), hf_greedy(hf, prompt, 24))


def test_transformers_model_in_ours_gives_the_same_logits_and_tokens():
    hf = random_hf_gpt2(seed=4)
    ours = _hf_to_ours(hf)
    idx = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours(idx) - hf(idx).logits).abs().max().item()
    assert diff < 1e-5
    prompt = idx[:, :8]
    assert torch.equal(greedy(ours, prompt, 24), hf_greedy(hf, prompt, 24))


def test_openai_key_names_and_mask_buffers_are_understood():
    # OpenAI's own upload names keys without "transformer." and stores causal-mask buffers.
    assert our_name("h.3.attn.c_attn.weight") == "transformer.h.3.attn.c_attn.weight"
    assert our_name("wte.weight") == "transformer.wte.weight"
    assert our_name("h.3.attn.bias") is None and our_name("h.3.attn.masked_bias") is None
    assert our_name("transformer.h.3.attn.c_attn.bias") == "transformer.h.3.attn.c_attn.bias"


def test_param_shapes_are_the_models_own():
    cfg = tiny_config()
    shapes = param_shapes(cfg)
    model = GPT(cfg)
    for name, p in model.named_parameters():
        want = (cfg.vocab_size, cfg.n_embd) if name == "transformer.wte.weight" else tuple(p.shape)
        assert shapes[name] == want
    assert LM_HEAD not in shapes


@pytest.mark.parametrize(
    "field, value",
    [
        ("model_type", "llama"),
        ("activation_function", "relu"),
        ("n_inner", 100),
        ("layer_norm_epsilon", 1e-6),
        ("scale_attn_by_inverse_layer_idx", True),
        ("add_cross_attention", True),
        ("architectures", ["LlamaForCausalLM"]),
    ],
)
def test_configs_that_are_not_gpt2_are_refused_naming_the_field(field, value):
    conf = random_hf_gpt2().config.to_dict()
    conf[field] = value
    with pytest.raises(CheckpointError, match=rf"config\.json: {field}:.*only GPT-2"):
        model_config_from_hf(conf, Path("config.json"))


def test_a_model_without_biases_has_no_hf_equivalent():
    with pytest.raises(CheckpointError, match="model.bias=false"):
        hf_config(tiny_config(bias=False), eot_id=50256, dtype=torch.float32)


def test_param_shapes_without_biases_are_the_models_own():
    cfg = tiny_config(bias=False)
    assert param_shapes(cfg) == {
        n: ((cfg.vocab_size, cfg.n_embd) if n == "transformer.wte.weight" else tuple(p.shape))
        for n, p in GPT(cfg).named_parameters()
    }
