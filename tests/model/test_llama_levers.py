"""Model options of the llama family measured by tools/bench_token_efficiency.py (see
docs/benchmarks.md): each one's behaviour at initialisation and in training."""

import pytest
import torch

from gpt_dist.config import ConfigError, ModelConfig, resolve_model_config
from gpt_dist.model.factory import build_model


def tiny(**kw) -> ModelConfig:
    base = dict(arch="llama", n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=32, vocab_size=97,
                vocab_pad_multiple=1, mlp_multiple=16, attn_impl="math")
    base.update(kw)
    return ModelConfig(**base)


def test_zero_init_proj_starts_every_block_as_the_identity_and_still_trains():
    torch.manual_seed(0)
    model = build_model(tiny(zero_init_proj=True))
    for block in model.transformer.h:
        assert not block.attn.c_proj.weight.any() and not block.mlp.c_proj.weight.any()
        assert block.attn.c_attn.weight.std() > 0.01 and block.mlp.c_fc.weight.std() > 0.01
    x = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        # Blocks add nothing yet: the logits are the head on the normed embedding, position by position.
        wte = model.transformer.wte(x)
        torch.testing.assert_close(model(x), model.lm_head(model.transformer.ln_f(wte))[..., :97])
    y = x.roll(-1, dims=1)
    before = model(x, y).item()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(8):
        model(x, y).backward()
        opt.step()
        opt.zero_grad()
    # The projections leave zero (their inputs are not zero), and the model learns.
    assert all(b.attn.c_proj.weight.abs().sum() > 0 and b.mlp.c_proj.weight.abs().sum() > 0 for b in model.transformer.h)
    assert model(x, y).item() < before - 0.5


def test_zero_init_proj_is_off_by_default_and_llama_only():
    model = build_model(tiny())
    assert all(b.attn.c_proj.weight.abs().sum() > 0 for b in model.transformer.h)
    with pytest.raises(ConfigError, match=r"model\.zero_init_proj: .*use model\.arch: llama"):
        resolve_model_config(ModelConfig(preset="tiny", zero_init_proj=True))
