"""`load_weights`, what checkpoint.init_from and generation call: any checkpoint, one answer."""

from __future__ import annotations

import pytest
import torch

from gpt_dist.checkpoint.model_loader import load_weights
from gpt_dist.checkpoint.state_dict_adapter import pad_vocab
from gpt_dist.errors import CheckpointError
from gpt_dist.model.gpt import GPT


@pytest.mark.slow  # the DeepSpeed checkpoints: one launcher run, 2 gloo ranks
@pytest.mark.parametrize("run", ["zero0_fp32", "zero2_bf16", "zero3_fp32"])
def test_fp32_master_weights_of_every_zero_stage(ds_checkpoints, run):
    cfg, state, meta = load_weights(ds_checkpoints[run])
    ref = torch.load(ds_checkpoints[run] / "reference.pt")["fp32_params"]
    assert set(state) == set(ref)  # our names; lm_head.weight is tied, not listed
    for name, t in state.items():
        assert t.dtype == torch.float32
        assert torch.equal(t, ref[name][: t.shape[0]]), name
    assert state["transformer.wte.weight"].shape == (cfg.vocab_size, cfg.n_embd)  # no padding rows
    assert meta["step"] == 3 and meta["world_size"] == 2 and meta["tokenizer"]["kind"] == "gpt2"
    assert meta["source"] == {"kind": "gpt_dist", "path": str((ds_checkpoints[run] / "step_00000003").resolve())}


@pytest.mark.slow
def test_loads_into_our_model_and_reproduces_the_engine(ds_checkpoints):
    ckpt = ds_checkpoints["zero3_fp32"]
    ref = torch.load(ckpt / "reference.pt")
    for path, tag in [(ckpt, None), (ckpt, "step_00000003"), (ckpt / "step_00000003", None)]:
        cfg, state, _ = load_weights(path, tag)
        model = GPT(cfg).eval()
        model.load_state_dict(pad_vocab(state, cfg))  # strict
        with torch.no_grad():
            assert (model(ref["idx"]) - ref["logits"]).abs().max() < 1e-5


def test_interrupted_save_is_refused(tmp_path):
    tag_dir = tmp_path / "step_00000200"
    tag_dir.mkdir()
    (tag_dir / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"PK partial")
    with pytest.raises(CheckpointError, match="incomplete checkpoint .* the save was interrupted"):
        load_weights(tag_dir)
    with pytest.raises(CheckpointError, match="no complete checkpoint; step_00000200 lack the COMPLETE marker"):
        load_weights(tmp_path)
