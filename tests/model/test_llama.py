"""The llama family (model.arch: llama): shapes, parameter counts, grouped-query attention,
rotary positions, and the paths it shares with GPT-2 (kernels, packed rows, KV cache, loss)."""

import pytest
import torch

from gpt_dist.config import ConfigError, ModelConfig, resolve_model_config
from gpt_dist.engine.parallelize import apply_activation_checkpointing
from gpt_dist.model.factory import build_model
from gpt_dist.model.gpt import GPT, KVCache
from gpt_dist.model.llama import Llama, apply_rotary, rotary_tables
from gpt_dist.model.presets import PRESETS

LLAMA_PRESETS = [name for name, p in PRESETS.items() if p.get("arch") == "llama"]


def tiny(**kw) -> ModelConfig:
    base = dict(arch="llama", n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=32, vocab_size=97,
                vocab_pad_multiple=1, mlp_multiple=16, attn_impl="math")
    base.update(kw)
    return ModelConfig(**base)


def formula(m: ModelConfig) -> int:
    """LLaMA's parameter count: per block two RMSNorms, q/k/v/o, gate/up/down; final norm,
    embedding, and the head when it is not the embedding."""
    c, d = m.n_embd, m.head_dim
    attn = c * (m.n_head * d) + 2 * c * (m.n_kv_head * d) + c * c + (2 * d if m.qk_norm else 0)
    block = 2 * c + attn + 3 * c * m.mlp_hidden
    return m.n_layer * block + c + m.vocab_size * c * (1 if m.tie_embeddings else 2)


@pytest.mark.parametrize("preset", LLAMA_PRESETS)
@pytest.mark.parametrize("tie", [True, False])
def test_preset_parameter_counts_follow_the_formula(preset, tie):
    cfg = ModelConfig(preset=preset, tie_embeddings=tie)
    with torch.device("meta"):
        model = build_model(cfg)
    assert isinstance(model, Llama)
    assert model.num_parameters() == formula(cfg)
    n_embedding = cfg.vocab_size * cfg.n_embd * (1 if tie else 2)
    assert model.num_parameters(non_embedding=True) == formula(cfg) - n_embedding


@pytest.mark.parametrize("size", ["124m", "350m", "774m", "1.5b"])
def test_presets_match_the_gpt2_shapes_and_sizes(size):
    gpt2 = {"124m": "gpt2", "350m": "gpt2-medium", "774m": "gpt2-large", "1.5b": "gpt2-xl"}[size]
    ours, theirs = resolve_model_config(ModelConfig(preset=f"llama-{size}")), resolve_model_config(ModelConfig(preset=gpt2))
    for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
        assert getattr(ours, k) == getattr(theirs, k)
    assert ours.n_kv_head < ours.n_head and ours.bias is False
    with torch.device("meta"):
        n_llama, n_gpt2 = build_model(ours).num_parameters(), build_model(theirs).num_parameters()
    assert 0.85 < n_llama / n_gpt2 < 1.05  # same size class: fewer kv heads, no positions, 3 MLP matrices


def test_swiglu_hidden_size_is_rounded_up_as_llama_does():
    assert resolve_model_config(ModelConfig(preset="llama-124m")).mlp_hidden == 2048  # 8/3 * 768
    assert resolve_model_config(ModelConfig(preset="llama-350m")).mlp_hidden == 2816  # 2730 -> 11 * 256
    assert resolve_model_config(ModelConfig(preset="llama-mini")).mlp_hidden == 352  # 341 -> 11 * 32


@pytest.mark.parametrize("kv, message", [(3, "between 1 and model.n_head=4 and divide it"), (0, "between 1"),
                                         (8, "between 1")])
def test_bad_kv_head_counts_are_clear_errors(kv, message):
    with pytest.raises(ConfigError, match=rf"model\.n_kv_head: .*{message}.*use one of 1, 2, 4"):
        resolve_model_config(tiny(n_kv_head=kv))


def test_family_mismatches_are_clear_errors():
    with pytest.raises(ConfigError, match=r"model\.bias: llama has no biases"):
        resolve_model_config(tiny(bias=True))
    with pytest.raises(ConfigError, match=r"model\.n_kv_head: .*gpt2 has no grouped-query attention"):
        resolve_model_config(ModelConfig(preset="tiny", n_kv_head=1))
    with pytest.raises(ConfigError, match=r"model\.tie_embeddings"):
        resolve_model_config(ModelConfig(preset="tiny", tie_embeddings=False))
    with pytest.raises(ConfigError, match=r"model\.arch: 'lama' is not one of gpt2, llama \(did you mean"):
        resolve_model_config(ModelConfig(preset="tiny", arch="lama"))


def test_gpt2_stays_the_default_family():
    cfg = resolve_model_config(ModelConfig(preset="gpt2"))
    assert cfg.arch == "gpt2" and cfg.bias is True and cfg.n_kv_head == cfg.n_head
    assert type(build_model(ModelConfig(preset="tiny"))) is GPT


def test_no_biases_and_tied_or_untied_head():
    tied, untied = Llama(tiny()), Llama(tiny(tie_embeddings=False))
    assert not any(n.endswith(".bias") for n, _ in tied.named_parameters())
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert "lm_head.weight" in dict(untied.named_parameters())
    assert "transformer.wpe.weight" not in tied.state_dict()


def test_grouped_query_attention_shares_each_kv_head_across_its_query_group():
    """n_kv_head=2 of 4 equals plain multi-head attention whose k/v heads are the grouped
    ones repeated: query heads 0, 1 read kv head 0; heads 2, 3 read kv head 1."""
    torch.manual_seed(0)
    gqa, mha = Llama(tiny(n_kv_head=2)), Llama(tiny(n_kv_head=4))
    state = gqa.state_dict()
    d, c = 8, 32
    for i in range(2):
        w = state[f"transformer.h.{i}.attn.c_attn.weight"]  # (c + 2 * 2d, c)
        q, k, v = w.split([c, 2 * d, 2 * d])
        rep = [t.view(2, d, c).repeat_interleave(2, dim=0).reshape(4 * d, c) for t in (k, v)]
        state[f"transformer.h.{i}.attn.c_attn.weight"] = torch.cat([q, *rep])
    mha.load_state_dict(state)
    x = torch.randint(0, 97, (2, 16))
    torch.testing.assert_close(gqa(x), mha(x), rtol=0, atol=1e-5)


def test_rotary_scores_depend_on_relative_positions_only():
    """q.k after rotation is a function of the positions' offset: shifting both positions
    leaves it, moving one changes it; shifting every position leaves the model's logits."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 1, 16, generator=g).unbind(0)  # (1, 1, 16) each -> (B, T, H, D)
    q, k = q[None], k[None]

    def score(pq, pk):
        rq = apply_rotary(q, rotary_tables(torch.tensor([[pq]]), 16, 10000.0))
        rk = apply_rotary(k, rotary_tables(torch.tensor([[pk]]), 16, 10000.0))
        return (rq * rk).sum().item()

    assert score(5, 2) == pytest.approx(score(105, 102), abs=1e-4)
    assert abs(score(5, 2) - score(5, 4)) > 1e-2
    torch.manual_seed(0)
    model = Llama(tiny())
    x = torch.randint(0, 97, (1, 12))
    torch.testing.assert_close(model(x, position_ids=torch.arange(7, 19)[None]), model(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_kv_cache_holds_kv_heads_and_decoding_equals_the_full_forward(qk_norm):
    torch.manual_seed(0)
    model = Llama(tiny(qk_norm=qk_norm, attn_impl="sdpa")).eval()
    x = torch.randint(0, 97, (2, 10))
    full = model(x)
    cache = KVCache(model.config, 2, 10, "cpu", torch.float32)
    assert cache.k[0].shape == (2, 10, 2, 8)  # n_kv_head, not n_head
    steps = [model(x[:, :6], kv_cache=cache)] + [model(x[:, i : i + 1], kv_cache=cache) for i in range(6, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)


def loss_and_grads(model, x, **kw):
    model.zero_grad()
    loss = model(x, x, **kw)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_sdpa_packed_rows_equal_the_math_path():
    torch.manual_seed(0)
    ref, fast = Llama(tiny(qk_norm=True)), Llama(tiny(qk_norm=True, attn_impl="sdpa"))
    fast.load_state_dict(ref.state_dict())
    x = torch.randint(0, 97, (2, 12))
    seg = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 3, 3], [3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1]])
    pos = torch.cat([torch.arange(n) for n in (3, 5, 2, 2, 5, 7)]).view(2, 12)
    (l0, g0), (l1, g1) = (loss_and_grads(m, x, segment_ids=seg, position_ids=pos) for m in (ref, fast))
    torch.testing.assert_close(l1, l0, rtol=0, atol=1e-5)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=0, atol=1e-5, msg=name)


def test_packed_segment_equals_the_sample_alone():
    torch.manual_seed(0)
    model = Llama(tiny(attn_impl="sdpa")).eval()
    a, b = torch.randint(0, 97, (1, 5)), torch.randint(0, 97, (1, 7))
    packed = model(torch.cat([a, b], 1), segment_ids=torch.tensor([[0] * 5 + [1] * 7]),
                   position_ids=torch.cat([torch.arange(5), torch.arange(7)])[None])
    torch.testing.assert_close(packed[:, 5:], model(b), rtol=0, atol=1e-5)


def test_chunked_loss_and_activation_checkpointing_give_the_same_gradients():
    torch.manual_seed(0)
    plain = Llama(tiny(loss_chunk_tokens=0, tie_embeddings=False))
    other = Llama(tiny(loss_chunk_tokens=7, tie_embeddings=False))
    other.load_state_dict(plain.state_dict())
    assert apply_activation_checkpointing(other) == [0, 1]
    x = torch.randint(0, 97, (2, 16))
    (l0, g0), (l1, g1) = loss_and_grads(plain, x), loss_and_grads(other, x)
    torch.testing.assert_close(l1, l0, rtol=0, atol=1e-6)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="llama-tiny", vocab_size=97, attn_impl="sdpa"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 97, (4, 32))
    losses = []
    for _ in range(10):
        loss = model(x, x.roll(-1, dims=1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


@pytest.mark.parametrize("preset", LLAMA_PRESETS)
def test_the_planner_counts_the_models_parameters(preset):
    from gpt_dist.model.cost import flops_per_token, num_parameters

    for kw in (dict(), dict(tie_embeddings=False, qk_norm=True)):
        cfg = resolve_model_config(ModelConfig(preset=preset, **kw))
        with torch.device("meta"):
            model = build_model(cfg)
        assert num_parameters(cfg) == model.num_parameters()
        assert num_parameters(cfg, non_embedding=True) == model.num_parameters(non_embedding=True)
        head = cfg.vocab_size * cfg.n_embd  # the head's matmul counts, the embedding lookup does not
        assert flops_per_token(cfg, 256) == 6.0 * (model.num_parameters(non_embedding=True) + head) + 12.0 * (
            cfg.n_layer * cfg.n_embd * 256)


def test_lora_targets_the_same_names_and_merges_back_into_a_llama():
    from gpt_dist.config import LoraConfig
    from gpt_dist.model.lora import add_lora, merge, merge_tensors

    torch.manual_seed(0)
    model = Llama(tiny())
    x = torch.randint(0, 97, (2, 12))
    lora_cfg = LoraConfig(r=4, alpha=8.0, dropout=0.0)
    adapted = add_lora(model, lora_cfg)
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.1)  # B starts at zero; move it so the merge has something to carry
    trained = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trained and all(".lora_" in n for n in trained)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trained} == {"c_attn", "c_proj", "c_fc"}
    with torch.no_grad():
        want = adapted(x)
        merged = merge(adapted.state_dict(), {"r": 4, "alpha": 8.0}, merge_tensors)
        plain = Llama(tiny())
        plain.load_state_dict(merged)
        torch.testing.assert_close(plain(x), want, rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("packed", [False, True])
def test_cuda_bf16_fast_kernels_match_math_with_grouped_query_attention(packed):
    """auto (flash-attn when installed, else SDPA's flash kernel) on expanded GQA heads, plain
    and packed rows, against the math reference."""
    torch.manual_seed(0)
    fast = Llama(tiny(n_embd=128, attn_impl="auto")).cuda().to(torch.bfloat16)
    ref = Llama(tiny(n_embd=128)).cuda().to(torch.bfloat16)
    ref.load_state_dict(fast.state_dict())
    x = torch.randint(0, 97, (2, 12), device="cuda")
    kw = {}
    if packed:
        kw = dict(segment_ids=torch.tensor([[0] * 5 + [1] * 7, [2] * 12], device="cuda"),
                  position_ids=torch.cat([torch.arange(5), torch.arange(7), torch.arange(12)]).view(2, 12).cuda())
    torch.testing.assert_close(fast(x, x, **kw).float(), ref(x, x, **kw).float(), rtol=0, atol=3e-2)
