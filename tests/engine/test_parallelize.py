"""What the engine set-up applies around the plain model: checkpointing, the attention kernel,
compile; the model's names and tensors stay as they were."""

import pytest
import torch

from gpt_dist.config import ModelConfig
from gpt_dist.engine.parallelize import apply_activation_checkpointing, parallelize
from gpt_dist.model import attention
from gpt_dist.model.attention import kernel_name
from gpt_dist.model.gpt import GPT


def tiny(**kw) -> ModelConfig:
    base = dict(n_layer=4, n_head=2, n_embd=32, block_size=32, vocab_size=97, vocab_pad_multiple=64)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("every, recomputed", [(1, [0, 1, 2, 3]), (2, [0, 2])])
def test_checkpointing_recomputes_the_chosen_blocks_in_backward(every, recomputed):
    model = GPT(tiny())
    assert apply_activation_checkpointing(model, every=every) == recomputed
    calls = [0] * 4
    for i, block in enumerate(model.transformer.h):
        block.attn.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    x = torch.randint(0, 97, (2, 16))
    model(x, x).backward()
    assert calls == [2 if i in recomputed else 1 for i in range(4)]  # once more in backward
    calls[:] = [0] * 4
    with torch.no_grad():
        model.eval()(x)  # evaluation never recomputes
    assert calls == [1] * 4


def test_parallelize_keeps_every_name_and_tensor():
    model = GPT(tiny(activation_checkpointing=True))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parallelize(model, torch.device("cpu"), "fp32", compile=True)
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in GPT(tiny()).named_parameters()]


def test_forward_changes_no_parameter_or_buffer():
    """With bf16 parameters and the fp32 padding mask, as DeepSpeed's bf16 leaves them."""
    model = GPT(tiny())
    for p in model.parameters():
        p.data = p.data.to(torch.bfloat16)
    tensors = lambda: {n: (t, t.dtype, t.data_ptr()) for n, t in  # noqa: E731
                       [*model.named_parameters(), *model.named_buffers()]}
    before = tensors()
    x = torch.randint(0, 97, (2, 8))
    model(x, x).backward()
    model(x)
    after = tensors()
    assert after.keys() == before.keys()
    for n, (t, dtype, ptr) in before.items():
        assert after[n][0] is t and after[n][1:] == (dtype, ptr), n
    assert model.lm_head.bias.dtype == torch.float32


def test_attention_kernel_is_chosen_once_at_set_up(monkeypatch):
    model = GPT(tiny(attn_impl="math"))
    parallelize(model, torch.device("cpu"), "fp32")
    assert {kernel_name(b.attn.kernel) for b in model.transformer.h} == {"math"}

    def no_resolving(*_):
        raise AssertionError("attention kernel resolved during forward")

    monkeypatch.setattr(attention, "resolve_attn_impl", no_resolving)
    x = torch.randint(0, 97, (2, 8))
    model(x, x).backward()


def test_a_model_never_set_up_chooses_on_its_first_forward():
    model = GPT(tiny())
    assert kernel_name(model.transformer.h[0].attn.kernel) is None
    model(torch.randint(0, 97, (1, 4)))
    assert kernel_name(model.transformer.h[0].attn.kernel) == "sdpa"  # auto on a CPU


def test_flash_attn_is_refused_where_it_cannot_run():
    model = GPT(tiny(attn_impl="flash_attn"))
    with pytest.raises(RuntimeError, match="needs CUDA"):
        parallelize(model, torch.device("cpu"), "bf16")


def test_compiled_blocks_train_packed_rows_like_eager():
    """Packed rows whose segments differ from batch to batch, through compiled blocks."""
    torch.manual_seed(0)
    eager, compiled = GPT(tiny(n_layer=2)), GPT(tiny(n_layer=2))
    compiled.load_state_dict(eager.state_dict())
    parallelize(compiled, torch.device("cpu"), "fp32", compile=True)
    x = torch.randint(0, 97, (2, 16))
    for cut in (5, 9):  # two packings
        seg = (torch.arange(16) >= cut).long().expand(2, 16)
        pos = torch.cat([torch.arange(cut), torch.arange(16 - cut)]).expand(2, 16)
        losses = [m(x, x, segment_ids=seg, position_ids=pos) for m in (eager, compiled)]
        torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=1e-5)
        for m, loss in zip((eager, compiled), losses):
            loss.backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-5, msg=name)


def test_loading_the_model_leaves_torch_dynamo_unimported():
    """The packed paths' graph break is set up without importing torch._dynamo (about a second
    of start-up), so commands that load a model and never compile or train (convert, generate,
    eval) do not pay for it."""
    import subprocess
    import sys

    code = ("import sys; import gpt_dist.model.factory, gpt_dist.checkpoint.model_loader, gpt_dist.conversion; "
            "print('torch._dynamo' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "False"
