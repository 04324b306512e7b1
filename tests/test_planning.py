"""gpt_dist.planning: the figures of `gpt-dist plan`, checked against arithmetic done by hand."""

import pytest
import torch

from gpt_dist.config import ConfigError, ModelConfig, resolve_model_config
from gpt_dist.errors import UserError
from gpt_dist.model.gpt import GPT
from gpt_dist.model.cost import detect_peak_flops, flops_per_token, num_parameters, peak_flops, stored_parameters
from gpt_dist.planning import (
    activation_bytes,
    load_model_config,
    make_plan,
    model_state_bytes,
    shape_warnings,
)


def shape(**kw) -> ModelConfig:
    return resolve_model_config(ModelConfig(**kw))


@pytest.mark.parametrize(
    "cfg",
    [
        dict(preset="gpt2"),
        dict(preset="gpt2-xl"),
        dict(preset="gpt2", vocab_pad_multiple=1),
        dict(n_layer=3, n_head=3, n_embd=48, block_size=40, vocab_size=1000, vocab_pad_multiple=128),
        dict(n_layer=2, n_head=4, n_embd=64, block_size=16, vocab_size=97, vocab_pad_multiple=64, bias=False),
        dict(n_layer=12, n_head=64, n_embd=1536, block_size=1024, vocab_size=50257, vocab_pad_multiple=1),
    ],
    ids=["gpt2", "gpt2-xl", "gpt2-unpadded", "padded-1000", "no-bias", "774M-plan"],
)
def test_parameter_counts_equal_the_model(cfg):
    m = shape(**cfg)
    with torch.device("meta"):
        model = GPT(shape(**cfg))
    assert num_parameters(m) == model.num_parameters()
    assert num_parameters(m, non_embedding=True) == model.num_parameters(non_embedding=True)
    # Memory holds the padding rows too.
    assert stored_parameters(m) == sum(p.numel() for p in model.parameters())


def test_gpt2_figures():
    m = load_model_config("gpt2")  # L=12, d=768, a=12, V=50257 (padded to 50304), 1024 positions
    p = make_plan(m, gpus=8, gpu="h100-80gb", micro_batch=8, mfu=0.4)
    # Per block 12·d² + 13·d = 7,077,888 + 9,984 = 7,087,872; × 12 = 85,054,464; + ln_f 1,536.
    assert p["non_embedding_params"] == 85_056_000
    # + wte 50,257·768 = 38,597,376 + wpe 1,024·768 = 786,432.
    assert p["params"] == 124_439_808
    # N = 124,439,808 − 786,432 (wpe) = 123,653,376; 6N = 741,920,256; 12·12·768·1024 = 113,246,208.
    assert p["flops_per_token"] == 855_166_464
    # 8 · 0.4 · 989e12 / 855,166,464 = 3,700,799.94 tokens/s.
    assert p["tokens_per_second"] == pytest.approx(3_700_799.94, rel=1e-8)
    # Chinchilla 20 · 124,439,808 = 2,488,796,160 tokens, the default budget: 672.5 s = 0.0077836 days.
    assert p["chinchilla_tokens"] == 2_488_796_160
    assert p["tokens"] == 2_488_796_160
    assert p["train_days"] == pytest.approx(0.00778359, rel=1e-5)
    # DeepSeek M = 72·12·768² + 6·12·768·1024 = 509,607,936 + 56,623,104 = 566,231,040;
    # C = M · 2,488,796,160 = 1.4092336e18; lr = 0.3118·C^-0.125 = 1.67978e-3;
    # batch = 0.2920·C^0.3271 = 252,299 tokens = 246.4 sequences of 1024.
    ds = p["deepseek"]
    assert ds["M"] == 566_231_040
    assert ds["compute_flops"] == pytest.approx(1.4092336380e18, rel=1e-9)
    assert ds["lr"] == pytest.approx(1.67978e-3, rel=1e-5)
    assert ds["batch_tokens"] == pytest.approx(252_299, rel=1e-5)
    assert ds["batch_sequences"] == pytest.approx(246.386, rel=1e-5)
    # Stored params 124,439,808 + 47 padding rows · 768 = 124,475,904; × 16 bytes = 1,991,614,464 B
    # = 1.855 GiB (stage 0), / 8 GPUs = 0.232 GiB (stage 3).
    mem = p["memory_per_gpu_gib"]
    assert mem["0"]["model_states_gib"] == pytest.approx(1.855, abs=1e-3)
    assert mem["3"]["model_states_gib"] == pytest.approx(0.232, abs=1e-3)
    # Activations, s=1024, b=8, h=768: 12 layers · 34·s·b·h = 2,566,914,048; ln_f/head inputs 4·s·b·h =
    # 25,165,824; loss 12·s·b·V = 4,940,464,128; total 7,532,544,000 bytes = 7.015 GiB.
    assert mem["0"]["activations_gib"] == pytest.approx(7.015, abs=1e-3)
    assert mem["3"]["total_gib"] == pytest.approx(7.015 + 0.232, abs=2e-3)
    assert all(v["fits"] for v in mem.values())
    assert p["warnings"] == []


def test_gpt2_xl_figures():
    m = load_model_config("gpt2-xl")  # L=48, d=1600, a=25, V=50257 (padded to 50304)
    p = make_plan(m, gpus=16, gpu="a100-80gb", tokens=3e10, micro_batch=8)
    # Per block 12·1600² + 13·1600 = 30,720,000 + 20,800 = 30,740,800; × 48 = 1,475,558,400; + ln_f 3,200.
    assert p["non_embedding_params"] == 1_475_561_600
    # + wte 50,257·1,600 = 80,411,200 + wpe 1,024·1,600 = 1,638,400.
    assert p["params"] == 1_557_611_200
    # N = 1,557,611,200 − 1,638,400 = 1,555,972,800; 6N = 9,335,836,800; 12·48·1600·1024 = 943,718,400.
    assert p["flops_per_token"] == 10_279_555_200
    # 16 · 0.4 · 312e12 / 10,279,555,200 = 194,249.65 tokens/s; 3e10 tokens = 154,440.4 s = 1.78751 days.
    assert p["tokens_per_second"] == pytest.approx(194_249.65, rel=1e-7)
    assert p["train_days"] == pytest.approx(1.787505, rel=1e-6)
    assert p["chinchilla_tokens"] == 31_152_224_000
    # Stored 1,557,611,200 + 47·1,600 = 1,557,686,400 params. Bytes per param per GPU, 16 GPUs:
    # stage 0: 16 -> 23.211 GiB; stage 1: 4 + 12/16 = 4.75 -> 6.891 GiB;
    # stage 2: 2 + 14/16 = 2.875 -> 4.171 GiB; stage 3: 16/16 = 1 -> 1.451 GiB.
    mem = p["memory_per_gpu_gib"]
    assert [mem[s]["model_states_gib"] for s in "0123"] == pytest.approx([23.211, 6.891, 4.171, 1.451], abs=1e-3)
    # Activations: 48 · 34·1024·8·1600 = 48 · 445,644,800 = 21,390,950,400; 4·1024·8·1600 = 52,428,800;
    # 12·1024·8·50,257 = 4,940,464,128; total 26,383,843,328 bytes = 24.572 GiB.
    assert mem["2"]["activations_gib"] == pytest.approx(24.572, abs=1e-3)
    assert mem["0"]["total_gib"] == pytest.approx(23.211 + 24.572, abs=2e-3)
    # DeepSeek M = 72·48·1600² + 6·48·1600·1024 = 8,847,360,000 + 471,859,200 = 9,319,219,200;
    # C = M·3e10 = 2.79576576e20; lr = 8.6709e-4; batch 1,423,748 tokens = 1,390.4 sequences.
    ds = p["deepseek"]
    assert ds["M"] == 9_319_219_200
    assert ds["lr"] == pytest.approx(8.6709e-4, rel=1e-4)
    assert ds["batch_tokens"] == pytest.approx(1_423_748, rel=1e-6)
    assert ds["batch_sequences"] == pytest.approx(1390.38, rel=1e-5)


def test_the_774m_plan_is_0_42b_with_thin_heads():
    """12 layers, 64 heads, d_model 1536: called "774M" in some plans."""
    m = shape(n_layer=12, n_head=64, n_embd=1536, block_size=1024, vocab_size=50257, vocab_pad_multiple=1)
    p = make_plan(m)
    # 12·(12·1536² + 13·1536) + 2·1536 = 339,981,312; + 50,257·1536 + 1024·1536 = 418,748,928.
    assert p["params"] == 418_748_928
    assert p["params"] == pytest.approx(0.42e9, rel=0.01)
    assert m.head_dim == 24
    warnings = "\n".join(p["warnings"])
    assert "head dimension 24 is below 64" in warnings
    assert "n_head=24 (head dim 64)" in warnings  # the fix it suggests
    assert "vocabulary of 50257 is not padded to a multiple of 64" in warnings
    assert "not a multiple of 8" not in warnings  # 24 = 3·8 is fine for tensor cores


def test_head_dim_not_a_multiple_of_8_warns():
    m = shape(n_layer=2, n_head=12, n_embd=120, block_size=64, vocab_size=128)  # head dim 10
    warnings = "\n".join(shape_warnings(m))
    assert "head dimension 10 (n_embd 120 / n_head 12) is not a multiple of 8" in warnings
    assert "head dimension 10 is below 64" in warnings
    assert "n_embd 120 is not a multiple of 64" in warnings


@pytest.mark.parametrize("preset", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_openai_presets_waste_nothing(preset):
    assert shape_warnings(load_model_config(preset)) == []


def test_zero_stages_shard_what_they_should():
    n = 1_000_000
    assert [model_state_bytes(n, s, dp=1) for s in range(4)] == [16e6] * 4  # one GPU: nothing to shard
    assert model_state_bytes(n, 0, dp=4) == 16e6
    assert model_state_bytes(n, 1, dp=4) == (2 + 2 + 12 / 4) * n
    assert model_state_bytes(n, 2, dp=4) == (2 + 14 / 4) * n
    assert model_state_bytes(n, 3, dp=4) == 16 / 4 * n


def test_activation_memory_follows_backend_and_checkpointing():
    base = dict(n_layer=4, n_head=4, n_embd=256, block_size=512, vocab_size=1000)
    flash = activation_bytes(shape(**base), seq_len=512, micro_batch=2)
    math_ = activation_bytes(shape(**base, attn_impl="math"), seq_len=512, micro_batch=2)
    ckpt = activation_bytes(shape(**base, activation_checkpointing=True), seq_len=512, micro_batch=2)
    assert flash["per_layer"] == 34 * 512 * 2 * 256
    # Without FlashAttention the a·s² scores are stored: + 5·a·s²·b per layer.
    assert math_["per_layer"] - flash["per_layer"] == 5 * 4 * 512 * 512 * 2
    # Checkpointing keeps each layer's 16-bit input, plus one layer rebuilt during backward.
    assert ckpt["layers"] == 4 * 2 * 512 * 2 * 256 + flash["per_layer"]
    assert ckpt["total"] < flash["total"] < math_["total"]


def test_a_plan_that_does_not_fit_says_so():
    p = make_plan(load_model_config("gpt2-xl"), gpus=1, gpu="a100-40gb", zero_stage=0, micro_batch=8)
    assert not p["memory_per_gpu_gib"]["0"]["fits"]  # 23.2 GiB states + 24.6 GiB activations > 40 GiB
    assert any("ZeRO stage 0 needs 47.8 GiB per GPU" in w for w in p["warnings"])


def test_flops_per_token_uses_the_training_sequence_length():
    m = load_model_config("gpt2")
    # Only the attention term changes: 12·12·768·(1024 − 512) = 56,623,104.
    assert flops_per_token(m, 1024) - flops_per_token(m, 512) == 56_623_104


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100-SXM4-40GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA GeForce RTX 4090", None),
        ("Tesla V100-SXM2-16GB", None),
    ],
)
def test_detect_peak_flops(name, peak):
    assert detect_peak_flops(name) == peak


def test_peak_flops_by_gpu_name():
    assert peak_flops("a100-40gb") == peak_flops("a100-80gb") == 312e12
    assert peak_flops("h100-80gb") == peak_flops("h200") == peak_flops("H200") == 989e12
    with pytest.raises(UserError, match=r"--gpu: unknown GPU 'a100' \(did you mean 'a100-\d+gb'\?\)"):
        peak_flops("a100")


def test_model_from_yaml(tmp_path):
    section = tmp_path / "run.yaml"
    section.write_text("model:\n  preset: gpt2\n  n_layer: 6\ntrain:\n  lr: 1.0e-3\n")
    assert num_parameters(load_model_config(str(section))) == 124_439_808 - 6 * 7_087_872
    top = tmp_path / "model.yaml"
    top.write_text("n_layer: 2\nn_head: 2\nn_embd: 64\nblock_size: 32\nvocab_size: 100\n")
    m = load_model_config(str(top))
    assert (m.n_layer, m.padded_vocab_size) == (2, 128)


def test_bad_model_specs_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"'gpt2-xxl' is neither a preset \(did you mean 'gpt2-xl'\?\)"):
        load_model_config("gpt2-xxl")
    with pytest.raises(ConfigError, match=r"missing\.yaml: model file not found"):
        load_model_config(str(tmp_path / "missing.yaml"))
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  preset: gpt2\n  n_heads: 8\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown key 'model\.n_heads'; did you mean 'model\.n_head'\?"):
        load_model_config(str(typo))
    wrong_type = tmp_path / "type.yaml"
    wrong_type.write_text("model:\n  preset: gpt2\n  n_layer: twelve\n")
    with pytest.raises(ConfigError, match=r"type\.yaml: key 'model\.n_layer'"):
        load_model_config(str(wrong_type))
    indivisible = tmp_path / "shape.yaml"
    indivisible.write_text("model:\n  preset: gpt2\n  n_head: 7\n")
    with pytest.raises(ConfigError, match=r"shape\.yaml: model\.n_embd: 768 is not divisible by model\.n_head=7"):
        load_model_config(str(indivisible))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(seq_len=2048), r"--seq-len: 2048 must be in 1\.\.model\.block_size \(1024\)"),
        (dict(gpus=0), r"--gpus: 0 must be at least 1"),
        (dict(mfu=1.5), r"--mfu: 1\.5 must be in \(0, 1\]"),
        (dict(zero_stage=4), r"--zero-stage: 4 is not 0, 1, 2 or 3"),
        (dict(micro_batch=0), r"--micro-batch: 0 must be at least 1"),
        (dict(tokens=-1.0), r"--tokens: -1\.0 must be positive"),
        (dict(gpu="v100"), r"--gpu: unknown GPU 'v100'"),
    ],
)
def test_bad_plan_arguments(kw, match):
    with pytest.raises(UserError, match=match):
        make_plan(load_model_config("gpt2"), **kw)


def test_cheapest_zero_stage_that_fits():
    gpt2 = load_model_config("gpt2")
    one = make_plan(gpt2, gpus=1, gpu="a100-80gb")
    assert one["zero_stage"] == 0 and "one GPU" in one["zero_stage_reason"]  # nothing to shard over
    many = make_plan(gpt2, gpus=8, gpu="a100-80gb")
    assert many["zero_stage"] == 1 and "no extra traffic" in many["zero_stage_reason"]
    # gpt2-xl, micro-batch 12 on 8 A100-40GB: only ZeRO-3's sharded weights leave room for the activations.
    xl = make_plan(load_model_config("gpt2-xl"), gpus=8, gpu="a100-40gb", micro_batch=12)
    assert [v["fits"] for v in xl["memory_per_gpu_gib"].values()] == [False, False, False, True]
    assert xl["zero_stage"] == 3 and "1.5x" in xl["zero_stage_reason"] and xl["warnings"] == []
    assert make_plan(gpt2, gpus=8, zero_stage=3)["zero_stage_reason"] == "as given by --zero-stage"


@pytest.mark.parametrize("kw", [dict(), dict(qk_norm=True, n_kv_head=2)])
def test_llama_activation_bytes_are_what_a_bf16_block_keeps_for_backward(kw):
    """Every tensor autograd saves in one llama block's bf16 forward (weights aside), summed,
    against the planner's per-layer bytes; sdpa keeps the repeated k/v heads, as counted."""
    from gpt_dist.engine.parallelize import parallelize
    from gpt_dist.model.factory import build_model
    from gpt_dist.model.llama import rotary_tables
    from gpt_dist.planning import llama_layer_bytes_per_token

    cfg = resolve_model_config(ModelConfig(preset="llama-124m", n_layer=1, attn_impl="sdpa", **kw))
    model = build_model(cfg).to(torch.bfloat16)
    parallelize(model, torch.device("cpu"), "bf16")
    s = 128
    weights = {p.data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def keep(t):
        if t.data_ptr() not in weights and t.dim() > 1 and t.shape[-2:] != (1, cfg.head_dim):  # rotary tables
            kept[t.data_ptr()] = t.numel() * t.element_size()
        return t

    x = torch.randn(1, s, cfg.n_embd, dtype=torch.bfloat16, requires_grad=True)
    rope = rotary_tables(torch.arange(s)[None], cfg.head_dim, cfg.rope_theta)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model.transformer.h[0](x, rope=rope)
    per_token = llama_layer_bytes_per_token(cfg)
    assert sum(kept.values()) / s == pytest.approx(per_token, rel=0.01)
