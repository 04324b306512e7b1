"""gpt_dist DeepSpeed checkpoints (ZeRO 0, 2, 3 on 2 ranks) -> Hugging Face (`gpt-dist convert to-hf`).

The checkpoints are written by DeepSpeed itself (tests/conversion/ds_checkpoint_writer.py),
with the live engine's logits and fp32 master weights saved next to them as the reference.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from conversion_helpers import MIXED_TEXTS, greedy, hf_greedy
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

from gpt_dist.checkpoint.layout import METADATA_FILE
from gpt_dist.checkpoint.model_loader import load_weights
from gpt_dist.checkpoint.state_dict_adapter import pad_vocab
from gpt_dist.cli import main
from gpt_dist.conversion import export_hf
from gpt_dist.errors import CheckpointError
from gpt_dist.model.gpt import GPT

pytestmark = pytest.mark.slow  # one deepspeed launcher run (2 gloo ranks) for the whole module
TAG = "step_00000003"
# Exactly as docs/conversion.md shows them.
TO_HF = "gpt-dist convert to-hf runs/gpt2/ckpt exports/gpt2-hf"
TO_HF_TAG_BF16 = "gpt-dist convert to-hf runs/gpt2/ckpt exports/gpt2-hf-bf16 --tag step_00001000 --dtype bf16"


def _hf_logits(out: Path, idx: torch.Tensor) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(out)  # HF_HUB_OFFLINE=1 (tests/conftest.py)
    assert type(model) is GPT2LMHeadModel
    with torch.no_grad():
        return model.eval()(idx).logits


def _ours(path: Path) -> GPT:
    cfg, state, _ = load_weights(path)
    model = GPT(cfg).eval()
    model.load_state_dict(pad_vocab(state, cfg))
    return model


@pytest.mark.parametrize("run", ["zero0_fp32", "zero2_bf16", "zero3_fp32"])
def test_exported_model_computes_what_the_trained_model_computed(ds_checkpoints, gpt2_tokenizer, tmp_path, run):
    ref = torch.load(ds_checkpoints[run] / "reference.pt")
    out = export_hf(ds_checkpoints[run], tmp_path / "hf")
    # Every weight is the engine's fp32 master weight (for the bf16 run, not its bf16 copy).
    with safe_open(out / "model.safetensors", "pt") as f:
        for name, master in ref["fp32_params"].items():
            t = f.get_tensor(name)
            if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
                t = t.t()
            assert torch.equal(t, master[: t.shape[0]]), name
    logits = _hf_logits(out, ref["idx"])
    if "logits" in ref:  # fp32 runs: the live engine's own forward pass
        assert (logits - ref["logits"]).abs().max() < 1e-5
    with torch.no_grad():
        assert (logits - _ours(ds_checkpoints[run])(ref["idx"])).abs().max() < 1e-5
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert all(hf_tok(t)["input_ids"] == gpt2_tokenizer.encode(t) for t in MIXED_TEXTS)


@pytest.mark.parametrize("run", ["zero1_fp32_lora", "zero3_fp32_lora"])
def test_lora_run_exports_the_merged_model(ds_checkpoints, tmp_path, run):
    """A LoRA run's checkpoint (frozen base + adapters, 2 ranks) exports as plain GPT-2 weights
    W + (alpha / r) B A that compute what the live adapted engine computed."""
    ref = torch.load(ds_checkpoints[run] / "reference.pt")
    out = export_hf(ds_checkpoints[run], tmp_path / "hf")
    logits = _hf_logits(out, ref["idx"])
    assert (logits - ref["logits"]).abs().max() < 1e-5
    with torch.no_grad():  # init_from, generate and eval read the same merged weights
        assert (logits - _ours(ds_checkpoints[run])(ref["idx"])).abs().max() < 1e-5
    with safe_open(out / "model.safetensors", "pt") as f:
        assert not any("lora" in k or "base_layer" in k for k in f.keys())
        for name, initial in ref["initial"].items():
            if name == "lm_head.weight":
                continue  # tied to the embedding
            t = f.get_tensor(name)
            if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
                assert not torch.equal(t.t(), initial), f"{name}: the adapter's update is missing"
            else:  # frozen during training
                assert torch.equal(t, initial[: t.shape[0]]), name


def test_lora_checkpoint_without_its_settings_is_refused(ds_copy, tmp_path):
    ckpt = ds_copy("zero3_fp32_lora")
    meta_file = ckpt / TAG / METADATA_FILE
    meta = json.loads(meta_file.read_text())
    del meta["config"]["lora"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"gpt_dist.json: the weights carry LoRA adapters but config.lora"):
        export_hf(ckpt, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_greedy_generation_matches(ds_checkpoints, tmp_path):
    out = export_hf(ds_checkpoints["zero3_fp32"], tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    prompt = torch.randint(0, 50257, (2, 8), generator=torch.Generator().manual_seed(3))
    assert torch.equal(greedy(_ours(ds_checkpoints["zero3_fp32"]), prompt, 30), hf_greedy(hf, prompt, 30))


@pytest.fixture
def workspace(ds_checkpoints, tmp_path, monkeypatch) -> Path:
    """A directory laid out as docs/conversion.md assumes: runs/gpt2/ckpt holds the
    ZeRO-3 checkpoint as step_00001000, and a later save killed half-way (no COMPLETE)."""
    ckpt = tmp_path / "runs" / "gpt2" / "ckpt"
    src = ds_checkpoints["zero3_fp32"] / TAG
    shutil.copytree(src, ckpt / "step_00001000")
    meta = json.loads((src / METADATA_FILE).read_text())
    (ckpt / "step_00001000" / METADATA_FILE).write_text(json.dumps(dict(meta, step=1000)))
    shutil.copytree(src, ckpt / "step_00002000", ignore=shutil.ignore_patterns("COMPLETE", "zero_pp_rank_1_*"))
    (ckpt / "latest").write_text("step_00002000")  # DeepSpeed's pointer names the broken one
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(command: str) -> None:
    argv = shlex.split(command)
    assert argv[0] == "gpt-dist" and main(argv[1:]) == 0


def test_readme_to_hf_takes_the_latest_complete_checkpoint(workspace, ds_checkpoints):
    _run(TO_HF)
    out = workspace / "exports" / "gpt2-hf"
    ref = torch.load(ds_checkpoints["zero3_fp32"] / "reference.pt")
    assert (_hf_logits(out, ref["idx"]) - ref["logits"]).abs().max() < 1e-5
    assert "`step_00001000`, step 1,000" in (out / "README.md").read_text()


def test_readme_to_hf_with_tag_and_bf16(workspace, ds_checkpoints):
    _run(TO_HF_TAG_BF16)
    out = workspace / "exports" / "gpt2-hf-bf16"
    assert sorted(x.name for x in out.iterdir()) == [
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    conf = json.loads((out / "config.json").read_text())
    assert conf["architectures"] == ["GPT2LMHeadModel"] and conf["dtype"] == "bfloat16"
    assert conf["vocab_size"] == 50257 and conf["n_positions"] == 64
    with safe_open(out / "model.safetensors", "pt") as f:
        assert set(f.keys()) == set(f"transformer.{k}" for k in _hf_param_suffixes(n_layer=2))
        assert all(f.get_slice(k).get_dtype() == "BF16" for k in f.keys())
        assert f.get_slice("transformer.wte.weight").get_shape() == [50257, 32]  # padding sliced off
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 50256 and gen["bos_token_id"] == 50256
    ref = torch.load(ds_checkpoints["zero3_fp32"] / "reference.pt")
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        logits = model(ref["idx"]).logits.float()
    assert (logits - ref["logits"]).abs().max() < 0.1  # bf16 rounding only
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        export_hf(workspace / "runs/gpt2/ckpt", workspace / "exports/broken", tag="step_00002000")


def _hf_param_suffixes(n_layer: int) -> list[str]:
    names = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"]
    for i in range(n_layer):
        for m in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            names += [f"h.{i}.{m}.weight", f"h.{i}.{m}.bias"]
    return names


def test_chat_template_and_model_card(ds_copy, tmp_path):
    ckpt = ds_copy("zero2_bf16")
    meta_file = ckpt / TAG / METADATA_FILE
    meta = json.loads(meta_file.read_text())
    meta["chat_template"] = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
    meta["metrics"] = {"train/loss": 3.25, "val/loss": 3.5}
    meta_file.write_text(json.dumps(meta))
    out = export_hf(ckpt / TAG, tmp_path / "sft")  # a tag folder works too
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False) == "<|user|>你好<|endoftext|>"
    card = (out / "README.md").read_text()
    assert "| train/loss | 3.25 |" in card and "| val/loss | 3.5 |" in card
    assert "ZeRO-2 on 2 ranks" in card and "zero_stage: 2" in card  # the run's config, verbatim
    assert "chat template" in card


# ------------------------------------------------------------------------------ bad input


def _fails(ckpt, tmp_path, match, **kw):
    with pytest.raises(CheckpointError, match=match):
        export_hf(ckpt, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary leftovers


def test_truncated_shard_is_refused(ds_copy, tmp_path):
    ckpt = ds_copy("zero3_fp32")
    shard = ckpt / TAG / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    _fails(ckpt, tmp_path, r"zero_pp_rank_1_mp_rank_00_optim_states\.pt: truncated or corrupt")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_weights(ckpt)


def test_missing_rank_is_refused(ds_copy, tmp_path):
    ckpt = ds_copy("zero2_bf16")
    (ckpt / TAG / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    _fails(ckpt, tmp_path, r"bf16_zero_pp_rank_1_mp_rank_00_optim_states\.pt: missing; .*ZeRO-2 on 2 ranks")


def test_config_that_does_not_match_the_weights_is_refused(ds_copy, tmp_path):
    ckpt = ds_copy("zero0_fp32")
    meta_file = ckpt / TAG / METADATA_FILE
    meta = json.loads(meta_file.read_text())
    meta["config"]["model"]["n_embd"] = 64
    meta_file.write_text(json.dumps(meta))
    _fails(ckpt, tmp_path, r"gpt_dist\.json config\.model: model\.n_embd does not match the weights")


def test_incomplete_checkpoint_is_refused(ds_copy, tmp_path):
    ckpt = ds_copy("zero3_fp32")
    (ckpt / TAG / "COMPLETE").unlink()
    _fails(ckpt, tmp_path, r"no complete checkpoint; step_00000003 lack the COMPLETE marker")
    _fails(ckpt, tmp_path, r"incomplete checkpoint", tag=TAG)


def test_folder_that_is_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.pt").write_bytes(b"not a checkpoint")
    _fails(tmp_path / "src", tmp_path, "neither a gpt_dist checkpoint")


def test_hugging_face_directory_is_not_a_source_for_to_hf(hf_gpt2_dir, tmp_path):
    _fails(hf_gpt2_dir, tmp_path, "is a Hugging Face model already")


def test_trl_sft_trainer_accepts_the_export(ds_checkpoints, tmp_path):
    # TRL comes with the dev extras (make setup); skipped where it is not installed.
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    out = export_hf(ds_checkpoints["zero3_fp32"], tmp_path / "hf")
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2, max_length=32,
        report_to=[], save_strategy="no", use_cpu=True,
    )  # fmt: skip
    trainer = trl.SFTTrainer(model=str(out), args=args, train_dataset=datasets.Dataset.from_dict({"text": MIXED_TEXTS}))
    assert math.isfinite(trainer.train().training_loss)
