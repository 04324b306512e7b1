"""No checkpoint file runs code when loaded: every entry point (resume, init_from, convert,
generate, eval) refuses a file whose unpickling would call a function, naming the file."""

from __future__ import annotations

import shutil

import pytest
from checkpoint_helpers import plant, run_train, sft_config

from gpt_dist.cli import main as cli
from gpt_dist.errors import CheckpointError

TAG = "step_00000002"
ZERO3_MODEL = "zero_pp_rank_0_mp_rank_00_model_states.pt"


def _only_newest(run):
    shutil.rmtree(run / "ckpt" / "step_00000001")
    return run / "ckpt" / TAG


@pytest.mark.parametrize("name", ["rng_rank00000.pt", ZERO3_MODEL])  # ours, DeepSpeed's
def test_resume_refuses_a_file_that_would_run_code(run_copy, tmp_path, name):
    tag_dir = _only_newest(run_copy)
    marker = tmp_path / "ran"
    plant(tag_dir / name, marker)
    with pytest.raises(CheckpointError, match=rf"{name}: refused to load: unpickling it would call posix\.system"):
        run_train(sft_config(run_copy, "train.max_steps=3"))
    assert not marker.exists()


def test_init_from_refuses_a_file_that_would_run_code(run_copy, tmp_path):
    tag_dir = _only_newest(run_copy)
    marker = tmp_path / "ran"
    plant(tag_dir / ZERO3_MODEL, marker)
    cfg = sft_config(tmp_path / "new", f"checkpoint.init_from={tag_dir}", "train.max_steps=1")
    with pytest.raises(CheckpointError, match="refused to load"):
        run_train(cfg)
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    ["convert", "to-hf", "{tag}", "{out}"],
    ["generate", "--model", "{tag}", "--prompt", "hi", "--max-new-tokens", "2"],
    ["eval", "--model", "{tag}", "--mc", "{mc}"],
])
def test_commands_refuse_a_file_that_would_run_code(run_copy, tmp_path, capsys, command):
    tag_dir = _only_newest(run_copy)
    marker = tmp_path / "ran"
    plant(tag_dir / ZERO3_MODEL, marker)
    mc = tmp_path / "mc.jsonl"
    mc.write_text('{"ctx": "a", "endings": ["b", "c"], "label": 0}\n')
    argv = [a.format(tag=tag_dir, out=tmp_path / "out", mc=mc) for a in command]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert f"{tag_dir}" in err and "refused to load" in err and "posix.system" in err
    assert not marker.exists()
