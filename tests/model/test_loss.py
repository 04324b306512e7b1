"""The chunked LM-head cross-entropy is the plain one: same loss and gradients, every reduction."""

import pytest
import torch

from gpt_dist.config import ModelConfig
from gpt_dist.model.gpt import GPT, IGNORE_INDEX
from gpt_dist.model.loss import lm_head_cross_entropy


def tiny(**kw) -> ModelConfig:
    base = dict(n_layer=2, n_head=4, n_embd=32, block_size=32, vocab_size=97, vocab_pad_multiple=64)
    base.update(kw)
    return ModelConfig(**base)


def twins(**kw) -> tuple[GPT, GPT]:
    """The same weights, one with the plain loss, one with 7-token chunks (not a divisor of B*T)."""
    torch.manual_seed(0)
    plain = GPT(tiny(loss_chunk_tokens=0, **kw))
    chunked = GPT(tiny(loss_chunk_tokens=7, **kw))
    chunked.load_state_dict(plain.state_dict())
    return plain, chunked


def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 97, (3, 20), generator=g)
    t = torch.randint(0, 97, (3, 20), generator=g)
    t[0, :6] = IGNORE_INDEX  # a prompt without loss
    t[2, 15:] = IGNORE_INDEX  # padding without loss
    return x, t


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pad", [1, 64])
def test_chunked_loss_and_gradients_equal_the_plain_path(reduction, pad):
    plain, chunked = twins(vocab_pad_multiple=pad)
    x, t = batch()
    # Per-token losses get unequal upstream gradients, as DPO's and SFT's weightings give them.
    weights = torch.rand(3, 20, generator=torch.Generator().manual_seed(2))
    losses = []
    for model in (plain, chunked):
        loss = model(x, t, reduction=reduction)
        (loss * weights).sum().backward() if reduction == "none" else loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)  # a sum near 225: relative
    if reduction == "none":
        assert losses[1].shape == (3, 20) and torch.all(losses[1][t == IGNORE_INDEX] == 0)
    # 1e-6 of each gradient's scale: a summed loss over 50 tokens has gradients near 10, where
    # fp32 rounding alone is a few 1e-6.
    for (name, p), q in zip(plain.named_parameters(), chunked.parameters()):
        scale = max(1.0, p.grad.abs().max().item())
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-6 * scale, msg=name)


def test_chunked_loss_without_gradients_is_the_same():
    plain, chunked = twins()
    x, t = batch()
    with torch.no_grad():
        for reduction in ("mean", "sum", "none"):
            torch.testing.assert_close(chunked(x, t, reduction=reduction), plain(x, t, reduction=reduction),
                                       rtol=1e-6, atol=1e-6)


def test_chunked_loss_under_bf16_autocast_matches_the_plain_path():
    plain, chunked = twins()
    x, t = batch()
    grads = []
    for model in (plain, chunked):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x, t)
        assert loss.dtype == torch.float32
        loss.backward()
        grads.append(model.transformer.wte.weight.grad)
    # Both run the head in bf16; only the accumulation order of the weight gradient differs.
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=2e-3)


def test_chunked_loss_with_bf16_weights_runs_in_bf16_and_returns_fp32():
    """As under DeepSpeed bf16: parameters cast, the padding-mask buffer not."""
    _, chunked = twins()
    for p in chunked.parameters():
        p.data = p.data.to(torch.bfloat16)
    x, t = batch()
    loss = chunked(x, t)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert chunked.transformer.wte.weight.grad.dtype == torch.bfloat16
    assert chunked.lm_head.bias.dtype == torch.float32  # forward cast a copy, not the buffer


def test_unknown_reduction_is_an_error():
    h, w = torch.randn(4, 8), torch.randn(16, 8)
    with pytest.raises(ValueError, match="reduction='avg'"):
        lm_head_cross_entropy(h, w, None, torch.zeros(4, dtype=torch.long), "avg", 2)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk", [0, 7])
@pytest.mark.parametrize("counted", [12, 0])
def test_tokens_without_a_loss_skip_the_head_and_change_nothing(reduction, chunk, counted):
    """An SFT-like batch (12 of 60 tokens counted, or none): the loss and the gradients of the
    hidden states and the head are those of the full logits through F.cross_entropy."""
    g = torch.Generator().manual_seed(3)
    h0, w0 = torch.randn(60, 16, generator=g), torch.randn(50, 16, generator=g)
    t = torch.full((60,), IGNORE_INDEX)
    keep = torch.randperm(60, generator=g)[:counted]
    t[keep] = torch.randint(0, 50, (counted,), generator=g)
    upstream = torch.rand(60, generator=g)
    grads = []
    for fn in ("ours", "reference"):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        if fn == "ours":
            loss = lm_head_cross_entropy(h, w, None, t, reduction, chunk)
        else:
            per_token = torch.nn.functional.cross_entropy(h @ w.t(), t, ignore_index=IGNORE_INDEX, reduction="none")
            loss = {"none": per_token, "sum": per_token.sum(),
                    "mean": per_token.sum() / max(counted, 1)}[reduction]
        ((loss * upstream).sum() if reduction == "none" else loss).backward()
        grads.append((loss.detach(), h.grad, w.grad))
    for got, want in zip(grads[0], grads[1]):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(grads[0][1].abs().sum(1)) <= counted  # no gradient into uncounted rows
