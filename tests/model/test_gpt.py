import math

import pytest
import torch

from gpt_dist.config import ModelConfig
from gpt_dist.model.attention import resolve_attn_impl
from gpt_dist.engine.parallelize import apply_activation_checkpointing
from gpt_dist.model.gpt import GPT, IGNORE_INDEX

OPENAI_PARAMS = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
}


def tiny(**kw) -> ModelConfig:
    base = dict(n_layer=2, n_head=4, n_embd=32, block_size=32, vocab_size=97, vocab_pad_multiple=1)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("preset", OPENAI_PARAMS)
@pytest.mark.parametrize("pad", [1, 128])
def test_preset_parameter_counts_equal_openai(preset, pad):
    with torch.device("meta"):
        model = GPT(ModelConfig(preset=preset, vocab_pad_multiple=pad))
    assert model.num_parameters() == OPENAI_PARAMS[preset]
    if pad == 1:  # no padding: the tensors themselves add up to OpenAI's count
        assert sum(p.numel() for p in model.parameters()) == OPENAI_PARAMS[preset]


def test_lm_head_is_tied_to_token_embedding():
    model = GPT(tiny())
    assert model.lm_head.weight is model.transformer.wte.weight


def test_init_statistics():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=8, n_head=4, n_embd=256, block_size=64, vocab_size=1000, vocab_pad_multiple=1)
    model = GPT(cfg)
    sd = dict(model.named_parameters())
    assert sd["transformer.wte.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert sd["transformer.h.0.attn.c_attn.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    scaled = 0.02 / math.sqrt(2 * cfg.n_layer)
    assert sd["transformer.h.3.attn.c_proj.weight"].std().item() == pytest.approx(scaled, rel=0.05)
    assert sd["transformer.h.3.mlp.c_proj.weight"].std().item() == pytest.approx(scaled, rel=0.05)
    assert torch.all(sd["transformer.h.0.attn.c_attn.bias"] == 0)
    assert torch.all(sd["transformer.h.0.ln_1.weight"] == 1)


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_causal_masking(impl):
    """A position's output does not depend on later tokens."""
    torch.manual_seed(0)
    model = GPT(tiny(attn_impl=impl)).eval()
    x = torch.randint(0, 97, (2, 16))
    y = x.clone()
    y[:, 10:] = torch.randint(0, 97, (2, 6))
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_sdpa_and_math_agree_forward_and_gradients():
    torch.manual_seed(0)
    ref = GPT(tiny(attn_impl="math"))
    fast = GPT(tiny(attn_impl="sdpa"))
    fast.load_state_dict(ref.state_dict())
    x = torch.randint(0, 97, (3, 32))
    losses = []
    for m in (ref, fast):
        m.zero_grad()
        loss = m(x, x)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=1e-5)
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-5, msg=name)


def test_vocab_padding_does_not_change_results():
    torch.manual_seed(0)
    plain = GPT(tiny(vocab_pad_multiple=1))
    padded = GPT(tiny(vocab_pad_multiple=64))
    assert padded.transformer.wte.weight.shape[0] == 128
    sd = plain.state_dict()
    with torch.no_grad():
        for name, p in padded.state_dict().items():
            if p.shape == sd[name].shape:
                p.copy_(sd[name])
            else:  # embedding: real rows copied, padding rows left random on purpose
                p[:97].copy_(sd[name])
    x = torch.randint(0, 97, (2, 20))
    lp, lq = plain(x), padded(x)
    assert lq.shape[-1] == 97
    torch.testing.assert_close(lp, lq, rtol=0, atol=1e-6)
    torch.testing.assert_close(plain(x, x), padded(x, x), rtol=0, atol=1e-6)
    # the padding mask is neither a parameter nor saved, and padding rows learn nothing
    assert "lm_head.bias" not in padded.state_dict()
    assert "lm_head.bias" not in dict(padded.named_parameters())
    padded(x, x).backward()
    assert torch.all(padded.transformer.wte.weight.grad[97:] == 0)


def test_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    a = GPT(tiny())
    b = GPT(tiny(activation_checkpointing=True))
    b.load_state_dict(a.state_dict())
    apply_activation_checkpointing(b)  # the engine set-up applies it from outside the model
    x = torch.randint(0, 97, (2, 24))
    for m in (a, b):
        m(x, x).backward()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-6)


def test_loss_ignores_masked_targets_and_matches_manual_cross_entropy():
    torch.manual_seed(0)
    model = GPT(tiny())
    x = torch.randint(0, 97, (2, 12))
    t = x.clone()
    t[:, :5] = IGNORE_INDEX
    logits = model(x)
    manual = torch.nn.functional.cross_entropy(logits[:, 5:].reshape(-1, 97), x[:, 5:].reshape(-1))
    torch.testing.assert_close(model(x, t), manual, rtol=0, atol=1e-6)
    per_token = model(x, t, reduction="none")
    assert per_token.shape == (2, 12) and torch.all(per_token[:, :5] == 0)


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_segments_attend_only_within_themselves(impl):
    """Two documents packed in one row give the same logits as each alone."""
    torch.manual_seed(0)
    model = GPT(tiny(attn_impl=impl)).eval()
    a, b = torch.randint(0, 97, (1, 7)), torch.randint(0, 97, (1, 9))
    packed = torch.cat([a, b], dim=1)
    seg = torch.tensor([[0] * 7 + [1] * 9])
    pos = torch.cat([torch.arange(7), torch.arange(9)])[None]
    with torch.no_grad():
        out = model(packed, segment_ids=seg, position_ids=pos)
        torch.testing.assert_close(out[:, :7], model(a), rtol=0, atol=1e-5)
        torch.testing.assert_close(out[:, 7:], model(b), rtol=0, atol=1e-5)


def test_runs_in_the_dtype_it_is_given():
    model = GPT(tiny()).to(torch.bfloat16)
    x = torch.randint(0, 97, (2, 8))
    assert model(x).dtype == torch.bfloat16
    assert model(x, x).dtype == torch.float32  # the loss is always computed in fp32


def test_runs_when_an_engine_casts_only_the_parameters():
    """DeepSpeed's bf16 casts parameters, not buffers such as the vocab-padding mask."""
    model = GPT(tiny(vocab_pad_multiple=64))
    for p in model.parameters():
        p.data = p.data.to(torch.bfloat16)
    x = torch.randint(0, 97, (2, 8))
    assert torch.isfinite(model(x, x)) and model(x).dtype == torch.bfloat16


def test_attn_impl_resolution():
    cpu = torch.device("cpu")
    assert resolve_attn_impl("auto", cpu, torch.float32) == "sdpa"
    assert resolve_attn_impl("math", cpu, torch.float32) == "math"
    with pytest.raises(RuntimeError, match="needs CUDA"):
        resolve_attn_impl("flash_attn", cpu, torch.bfloat16)


def test_sequence_longer_than_block_size_is_an_error():
    model = GPT(tiny())
    with pytest.raises(ValueError, match="block_size=32"):
        model(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_flash_path_matches_math():
    torch.manual_seed(0)
    cfg = tiny(n_embd=128, n_head=2, attn_impl="auto")
    fast = GPT(cfg).cuda().to(torch.bfloat16)
    ref = GPT(tiny(n_embd=128, n_head=2, attn_impl="math")).cuda().to(torch.bfloat16)
    ref.load_state_dict(fast.state_dict())
    x = torch.randint(0, 97, (4, 32), device="cuda")
    torch.testing.assert_close(fast(x).float(), ref(x).float(), rtol=0, atol=3e-2)
