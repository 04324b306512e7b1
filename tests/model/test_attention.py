"""Packed rows without a (T, T) mask: the per-segment SDPA path and FlashAttention-2's
variable-length kernel against the masked math reference, forward and backward."""

import pytest
import torch

from gpt_dist.config import ModelConfig
from gpt_dist.model.attention import Segments, flash_attn_available, flash_attention, math_attention, sdpa_attention
from gpt_dist.model.gpt import GPT

# Two rows as SFT packing writes them: samples 0, 1, 2 then padding (its own segment, id 3);
# the second row starts with the id the first row ended with, and is still a new segment.
SEGMENT_IDS = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 3, 3],
                            [3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1]])


def test_cumulative_lengths_from_segment_ids():
    s = Segments.from_ids(SEGMENT_IDS)
    assert s.bounds == (0, 3, 8, 10, 12, 17, 24)
    assert s.cu_seqlens.dtype == torch.int32 and s.cu_seqlens.tolist() == list(s.bounds)
    assert s.max_len == 7


def qkv(dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 12, 3, 16, generator=g).to(device, dtype).requires_grad_() for _ in range(3)]


def outputs_and_grads(kernel, q, k, v, segments):
    y = kernel(q, k, v, segments=segments)
    (y * torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)).sum().backward()
    out = [y.detach().float()] + [t.grad.float() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    return out


def test_sdpa_per_segment_equals_the_masked_math_path():
    q, k, v = qkv()
    segments = Segments.from_ids(SEGMENT_IDS)
    ref = outputs_and_grads(math_attention, q, k, v, segments)
    got = outputs_and_grads(sdpa_attention, q, k, v, segments)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)


def test_packed_model_step_equals_the_math_path():
    """The whole model, loss and every parameter's gradient, sdpa (no mask) against math."""
    cfg = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=97, vocab_pad_multiple=1)
    torch.manual_seed(0)
    ref, fast = GPT(ModelConfig(attn_impl="math", **cfg)), GPT(ModelConfig(attn_impl="sdpa", **cfg))
    fast.load_state_dict(ref.state_dict())
    x = torch.randint(0, 97, SEGMENT_IDS.shape)
    pos = torch.cat([torch.arange(n) for n in (3, 5, 2, 2, 5, 7)]).view(2, 12)
    losses = []
    for m in (ref, fast):
        loss = m(x, x, segment_ids=SEGMENT_IDS, position_ids=pos)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=1e-5)
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-5, msg=name)


@pytest.mark.skipif(not (torch.cuda.is_available() and flash_attn_available()), reason="needs CUDA and flash-attn")
def test_flash_attn_varlen_equals_the_masked_math_path():
    q, k, v = qkv(torch.bfloat16, "cuda")
    segments = Segments.from_ids(SEGMENT_IDS.cuda())
    ref = outputs_and_grads(math_attention, q, k, v, segments)
    got = outputs_and_grads(flash_attention, q, k, v, segments)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=3e-2, msg=name)


def gqa_qkv(dtype=torch.float32, device="cpu", tq=12, tk=12):
    """q with 4 heads, k and v with 2 (each shared by two query heads)."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, tq, 4, 16, generator=g)
    k, v = (torch.randn(2, tk, 2, 16, generator=g) for _ in range(2))
    return [t.to(device, dtype).requires_grad_() for t in (q, k, v)]


def test_math_gqa_is_multi_head_attention_on_the_repeated_kv_heads():
    q, k, v = gqa_qkv()
    got = math_attention(q, k, v)
    want = math_attention(q, *(t.repeat_interleave(2, dim=2) for t in (k, v)))  # heads 0, 1 <- kv 0; 2, 3 <- kv 1
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="4 query heads cannot share 3"):
        math_attention(q, torch.randn(2, 12, 3, 16), torch.randn(2, 12, 3, 16))


@pytest.mark.parametrize("case", ["causal", "packed", "kv_cache_mask"])
def test_sdpa_with_grouped_kv_heads_equals_math(case):
    """Outputs and the gradients of q and of the shared k, v heads."""
    kw, tq = {}, 12
    if case == "packed":
        kw = dict(segments=Segments.from_ids(SEGMENT_IDS))
    elif case == "kv_cache_mask":  # 3 new queries over 12 cached + new keys, left padding in row 1
        tq = 3
        mask = torch.ones(2, 1, 3, 12, dtype=torch.bool).tril(diagonal=9)
        mask[1, :, :, :4] = False
        kw = dict(mask=mask)
    q, k, v = gqa_qkv(tq=tq)

    def run(kernel):
        y = kernel(q, k, v, **kw)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        out = [y.detach()] + [t.grad.clone() for t in (q, k, v)]
        for t in (q, k, v):
            t.grad = None
        return out

    for name, a, b in zip(("out", "dq", "dk", "dv"), run(sdpa_attention), run(math_attention)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)


@pytest.mark.skipif(not (torch.cuda.is_available() and flash_attn_available()), reason="needs CUDA and flash-attn")
@pytest.mark.parametrize("packed", [False, True])
def test_flash_attn_reads_grouped_kv_heads_natively(packed, monkeypatch):
    """flash_attn_func / flash_attn_varlen_func get k, v with their 2 heads (not repeated) and
    compute what math computes on the repeated heads."""
    import flash_attn

    import gpt_dist.model.attention as attention

    seen = []
    for fn in ("flash_attn_func", "flash_attn_varlen_func"):
        real = getattr(flash_attn, fn)

        def spy(q, k, v, *a, _real=real, **kw):
            seen.append(k.shape[-2])
            return _real(q, k, v, *a, **kw)

        monkeypatch.setattr(flash_attn, fn, spy)
    q, k, v = gqa_qkv(torch.bfloat16, "cuda")
    segments = Segments.from_ids(SEGMENT_IDS.cuda()) if packed else None
    ref = outputs_and_grads(math_attention, q, k, v, segments)
    got = outputs_and_grads(attention.flash_attention, q, k, v, segments)
    assert seen == [2]
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=3e-2, msg=name)
