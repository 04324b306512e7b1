"""Our llama family and transformers' LlamaForCausalLM compute the same function once the
weights are converted, both ways, through the one loader and the to-hf / from-hf converters."""

from __future__ import annotations

import json

import pytest
import torch
from conversion_helpers import _randomize
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from gpt_dist.benchmark.hf_reference import build_hf_twin
from gpt_dist.checkpoint import llama_adapter
from gpt_dist.checkpoint.model_loader import load_model, load_weights
from gpt_dist.checkpoint.state_dict_adapter import pad_vocab, param_shapes
from gpt_dist.config import ModelConfig, resolve_model_config
from gpt_dist.conversion.hf_export import export_hf
from gpt_dist.conversion.hf_import import import_hf
from gpt_dist.conversion.hf_tokenizer import save_hf_tokenizer
from gpt_dist.errors import CheckpointError
from gpt_dist.model.llama import Llama

IDX = torch.tensor([[50256, 15496, 995, 0, 383, 2746, 338, 2994, 3214], [464, 3290, 318, 257, 1332, 13, 198, 40, 1101]])


def llama_cfg(**kw) -> ModelConfig:
    return resolve_model_config(ModelConfig(preset="llama-tiny", attn_impl="sdpa", **kw))


def random_llama(cfg: ModelConfig, seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    model = Llama(cfg)
    with torch.no_grad():  # norms away from 1, so each one's conversion matters
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    return model.eval()


def to_hf_model(model: Llama):
    """LlamaForCausalLM (Qwen3ForCausalLM with qk_norm) holding `model`'s weights as to-hf maps them."""
    return build_hf_twin(model).eval()


@pytest.mark.parametrize("kw", [dict(), dict(tie_embeddings=False), dict(n_kv_head=1, rope_theta=500000.0),
                                dict(n_kv_head=4, vocab_pad_multiple=1)])
def test_our_llama_and_hf_llama_give_the_same_logits(kw):
    model = random_llama(llama_cfg(**kw))
    hf = to_hf_model(model)
    with torch.no_grad():
        ours, theirs = model(IDX), hf(IDX).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_param_shapes_are_the_models_own():
    for kw in (dict(), dict(tie_embeddings=False), dict(qk_norm=True)):
        cfg = llama_cfg(vocab_pad_multiple=1, **kw)
        model_shapes = {n: tuple(p.shape) for n, p in Llama(cfg).named_parameters()}
        assert param_shapes(cfg) == model_shapes


@pytest.fixture
def hf_llama_dir(tmp_path, gpt2_tokenizer):
    """A save_pretrained LlamaForCausalLM (GQA, untied head) with random weights and GPT-2's tokenizer."""
    torch.manual_seed(3)
    conf = LlamaConfig(vocab_size=50257, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       rms_norm_eps=1e-5, tie_word_embeddings=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return saved_random(LlamaForCausalLM(conf), tmp_path / "hf_llama", gpt2_tokenizer)


def saved_random(hf, d, tokenizer):
    """(d, hf): `hf` with random weights, saved with save_pretrained and GPT-2's tokenizer files."""
    hf.eval()
    _randomize(hf.named_parameters())
    hf.save_pretrained(d)
    save_hf_tokenizer(tokenizer, d, chat_template=None, model_max_length=64)
    return d, hf


def test_an_hf_llama_directory_loads_through_the_one_loader(hf_llama_dir):
    d, hf = hf_llama_dir
    loaded = load_model(d, device="cpu", dtype="fp32")
    cfg = loaded.model.config
    assert (cfg.arch, cfg.n_kv_head, cfg.mlp_hidden, cfg.tie_embeddings) == ("llama", 2, 192, False)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(IDX), hf(IDX).logits, rtol=0, atol=1e-5)
    assert loaded.tokenizer.encode("Hello world") == [15496, 995]


def test_from_hf_then_to_hf_round_trips_and_loads_offline_in_transformers(hf_llama_dir, tmp_path, monkeypatch):
    d, hf = hf_llama_dir
    tag_dir = import_hf(d, tmp_path / "ckpt")
    cfg, state, meta = load_weights(tmp_path / "ckpt")
    assert meta["step"] == 0 and cfg.arch == "llama" and "lm_head.weight" in state
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = export_hf(tag_dir, tmp_path / "exported")
    conf = json.loads((out / "config.json").read_text())
    assert conf["architectures"] == ["LlamaForCausalLM"] and conf["num_key_value_heads"] == 2
    assert "A Llama-style language model (`LlamaForCausalLM`, 2 key/value heads" in (out / "README.md").read_text()
    back = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(back) is LlamaForCausalLM
    with torch.no_grad():
        torch.testing.assert_close(back(IDX).logits, hf(IDX).logits, rtol=0, atol=1e-6)
    ours = load_model(tmp_path / "ckpt", device="cpu", dtype="fp32").model
    with torch.no_grad():
        torch.testing.assert_close(ours(IDX), hf(IDX).logits, rtol=0, atol=1e-5)


def test_a_tied_model_stores_no_head_and_pads_one(hf_llama_dir):
    cfg = llama_cfg()
    model = random_llama(cfg)
    state = {n: t[: cfg.vocab_size] if n == "transformer.wte.weight" else t for n, t in model.state_dict().items()
             if n != "lm_head.weight"}
    padded = pad_vocab(state, cfg)
    assert padded["lm_head.weight"] is padded["transformer.wte.weight"]
    assert padded["transformer.wte.weight"].shape[0] == cfg.padded_vocab_size
    Llama(cfg).load_state_dict(padded)


def test_models_llama_cannot_express_are_clear_errors(tmp_path):
    qwen3 = dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], hidden_size=64, num_attention_heads=4,
                 intermediate_size=192, use_sliding_window=True)
    with pytest.raises(CheckpointError, match=r"config.json: use_sliding_window: true limits attention to a window"):
        llama_adapter.model_config_from_hf(qwen3, tmp_path / "config.json")
    conf = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=64, num_attention_heads=4,
                intermediate_size=192, rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0})
    with pytest.raises(CheckpointError, match=r"config.json: rope_parameters.rope_type: 'llama3' scales"):
        llama_adapter.model_config_from_hf(conf, tmp_path / "config.json")
    conf.update(rope_parameters=None, attention_bias=True)
    with pytest.raises(CheckpointError, match=r"attention_bias: true adds biases"):
        llama_adapter.model_config_from_hf(conf, tmp_path / "config.json")


def random_qk_norm_llama(seed: int = 0, **kw) -> Llama:
    model = random_llama(llama_cfg(qk_norm=True, **kw), seed)
    with torch.no_grad():  # per-head norms away from 1 too
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("kw", [dict(), dict(tie_embeddings=False, n_kv_head=1)])
def test_a_qk_norm_model_is_qwen3_with_the_same_logits(kw):
    """Qwen3ForCausalLM = Llama + RMSNorm over each head's dim on q and k, before RoPE, with
    rms_norm_eps: our model.qk_norm; the conversion maps attn.q_norm / k_norm one to one."""
    from transformers import Qwen3ForCausalLM

    model = random_qk_norm_llama(**kw)
    hf = to_hf_model(model)
    assert type(hf) is Qwen3ForCausalLM
    with torch.no_grad():
        torch.testing.assert_close(model(IDX), hf(IDX).logits, rtol=0, atol=1e-5)


def test_qwen3_directory_imports_and_exports_back_loading_offline(tmp_path, gpt2_tokenizer, monkeypatch):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(5)
    conf = Qwen3Config(vocab_size=50257, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                       rms_norm_eps=1e-6, tie_word_embeddings=True,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    src, hf = saved_random(Qwen3ForCausalLM(conf), tmp_path / "qwen3", gpt2_tokenizer)

    tag_dir = import_hf(src, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt", device="cpu", dtype="fp32").model
    c = loaded.config
    assert (c.arch, c.qk_norm, c.n_kv_head, c.norm_eps, c.rope_theta) == ("llama", True, 2, 1e-6, 1e6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDX), hf(IDX).logits, rtol=0, atol=1e-5)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = export_hf(tag_dir, tmp_path / "exported")
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == ["Qwen3ForCausalLM"] and written["model_type"] == "qwen3"
    assert "(`Qwen3ForCausalLM`, 2 key/value heads" in (out / "README.md").read_text()
    back = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(back) is Qwen3ForCausalLM
    with torch.no_grad():
        torch.testing.assert_close(back(IDX).logits, hf(IDX).logits, rtol=0, atol=1e-5)
