"""Hugging Face GPT-2 directories -> gpt_dist checkpoints (`gpt-dist convert from-hf`), and back."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from conversion_helpers import random_hf_gpt2
from safetensors.torch import load_file
from transformers import AutoTokenizer

from gpt_dist.checkpoint.layout import latest_complete_tag, read_metadata
from gpt_dist.checkpoint.model_loader import load_weights
from gpt_dist.checkpoint.state_dict_adapter import pad_vocab
from gpt_dist.cli import main
from gpt_dist.conversion import export_hf, import_hf
from gpt_dist.errors import CheckpointError
from gpt_dist.model.gpt import GPT

# Exactly as docs/conversion.md shows it.
FROM_HF = "gpt-dist convert from-hf downloads/gpt2 runs/from-openai/ckpt"


def _our_logits(path: Path, idx: torch.Tensor) -> torch.Tensor:
    cfg, state, _ = load_weights(path)
    model = GPT(cfg).eval()
    model.load_state_dict(pad_vocab(state, cfg))
    with torch.no_grad():
        return model(idx)


def _idx(n: int = 64) -> torch.Tensor:
    return torch.randint(0, 50257, (2, n), generator=torch.Generator().manual_seed(5))


def test_hf_to_ours_to_hf_is_the_identity_on_every_tensor(hf_gpt2_dir, tmp_path):
    import_hf(hf_gpt2_dir, tmp_path / "ckpt")
    export_hf(tmp_path / "ckpt", tmp_path / "back")
    before = load_file(hf_gpt2_dir / "model.safetensors")
    after = load_file(tmp_path / "back" / "model.safetensors")
    assert before.keys() == after.keys()
    for name, t in before.items():
        assert after[name].dtype == t.dtype and torch.equal(after[name], t), name
    conf_before = json.loads((hf_gpt2_dir / "config.json").read_text())
    conf_after = json.loads((tmp_path / "back" / "config.json").read_text())
    for key in (
        "model_type",
        "n_layer",
        "n_head",
        "n_embd",
        "n_positions",
        "vocab_size",
        "activation_function",
        "layer_norm_epsilon",
        "tie_word_embeddings",
        "resid_pdrop",
    ):
        assert conf_after[key] == conf_before[key], key
    tok_before, tok_after = AutoTokenizer.from_pretrained(hf_gpt2_dir), AutoTokenizer.from_pretrained(tmp_path / "back")
    text = "Round trip: 往返 — khứ hồi."
    assert tok_after(text)["input_ids"] == tok_before(text)["input_ids"]


def test_readme_from_hf_writes_a_checkpoint_in_our_layout(hf_gpt2_dir, gpt2_tokenizer, tmp_path, monkeypatch):
    shutil.copytree(hf_gpt2_dir, tmp_path / "downloads" / "gpt2")
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(FROM_HF)
    assert argv[0] == "gpt-dist" and main(argv[1:]) == 0
    out = tmp_path / "runs" / "from-openai" / "ckpt"
    assert latest_complete_tag(out) == "step_00000000"
    assert (out / "latest").read_text() == "step_00000000"
    tag_dir = out / "step_00000000"
    meta = read_metadata(tag_dir)
    assert meta["step"] == 0 and meta["zero_stage"] == 0 and meta["world_size"] == 1
    assert meta["config"]["model"]["n_embd"] == 32 and meta["config"]["model"]["vocab_size"] == 50257
    assert meta["tokenizer"] == gpt2_tokenizer.spec()
    # DeepSpeed's ZeRO-0 shape: the module as GPT(cfg).state_dict() has it (padded, head tied).
    module = torch.load(tag_dir / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    assert module["transformer.wte.weight"].shape == (50304, 32)
    assert module["lm_head.weight"].data_ptr() == module["transformer.wte.weight"].data_ptr()
    # And the weights compute what the Hugging Face model computes.
    hf = random_hf_gpt2(seed=1)  # the model hf_gpt2_dir holds
    with torch.no_grad():
        assert (_our_logits(out, _idx()) - hf(_idx()).logits).abs().max() < 1e-5


def test_openai_style_directory_without_prefix_with_mask_buffers(tmp_path):
    # OpenAI's upload: keys without "transformer.", causal-mask buffers, pytorch_model.bin.
    hf = random_hf_gpt2(seed=2)
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(hf.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64, dtype=torch.bool)).view(1, 1, 64, 64)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)  # a 2019 file
    hf.config.save_pretrained(tmp_path)
    with torch.no_grad():
        assert (_our_logits(tmp_path, _idx()) - hf(_idx()).logits).abs().max() < 1e-5


def test_sharded_safetensors_directory(tmp_path):
    hf = random_hf_gpt2(seed=3)
    hf.save_pretrained(tmp_path, max_shard_size="2MB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    cfg, state, meta = load_weights(tmp_path)
    assert state["transformer.wte.weight"].shape == (cfg.vocab_size, cfg.n_embd)
    assert meta["source"]["kind"] == "huggingface" and meta["tokenizer"] is None
    with torch.no_grad():
        assert (_our_logits(tmp_path, _idx()) - hf(_idx()).logits).abs().max() < 1e-5


# ------------------------------------------------------------------------------ bad input


def _neox_dir(path: Path) -> Path:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    conf = GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=100)
    GPTNeoXForCausalLM(conf).save_pretrained(path)
    return path


def test_a_model_that_is_neither_gpt2_nor_llama_is_refused(tmp_path):
    src = _neox_dir(tmp_path / "neox")
    with pytest.raises(CheckpointError, match=r"config\.json: model_type: 'gpt_neox' is not 'gpt2'.*Llama"):
        import_hf(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["neox"]  # no temporary folder left either


def test_a_truncated_weights_file_is_refused(hf_gpt2_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(hf_gpt2_dir, src)
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated or corrupt"):
        import_hf(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_config_that_does_not_match_the_weights_is_refused(hf_gpt2_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(hf_gpt2_dir, src)
    conf = json.loads((src / "config.json").read_text())
    conf["n_embd"] = 64
    (src / "config.json").write_text(json.dumps(conf))
    with pytest.raises(CheckpointError, match=r"config\.json: model\.n_embd does not match the weights"):
        import_hf(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    conf["n_embd"], conf["n_layer"] = 32, 3
    (src / "config.json").write_text(json.dumps(conf))
    with pytest.raises(CheckpointError, match=r"model\.n_layer.*missing transformer\.h\.2"):
        load_weights(src)


def test_a_folder_that_is_neither_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(CheckpointError, match="neither a gpt_dist checkpoint .* nor a Hugging Face model"):
        load_weights(tmp_path)
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        import_hf(tmp_path, tmp_path.parent / "out_of_nothing")
    assert not (tmp_path.parent / "out_of_nothing").exists()


def test_an_existing_output_directory_is_left_alone(hf_gpt2_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="already exists and is not empty"):
        import_hf(hf_gpt2_dir, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
