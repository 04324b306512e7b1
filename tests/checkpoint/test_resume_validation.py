"""Resume checks a tag before loading it: every file its manifest lists (present, same size,
same content as saved) and the model it holds; `resume: auto` falls back to the newest tag that
validates, saying so; a run dir of another model is one clear error."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess

import pytest
from checkpoint_helpers import run_train, sft_config

from gpt_dist.checkpoint.loader import load_weights
from gpt_dist.errors import CheckpointError

OPTIM = "zero_pp_rank_0_mp_rank_00_optim_states.pt"
MODEL = "zero_pp_rank_0_mp_rank_00_model_states.pt"


def _resumed_tag(run):
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    return [e["tag"] for e in events if e["event"] == "resumed"][-1]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _delete(path):
    path.unlink()


def _from_other_save(path):
    # the same shard of the other save: same name, same size, other content
    other = path.parent.parent / "step_00000001" / path.name
    assert other.stat().st_size == path.stat().st_size
    shutil.copy2(other, path)


@pytest.mark.parametrize("damage, file, problem", [
    (_truncate, OPTIM, "truncated"),
    (_delete, OPTIM, "missing"),
    (_delete, MODEL, "missing"),
    (_from_other_save, OPTIM, "another save"),
])
def test_damaged_newest_tag_falls_back_to_the_previous_one(run_copy, caplog, damage, file, problem):
    damage(run_copy / "ckpt" / "step_00000002" / file)
    with caplog.at_level(logging.WARNING, logger="gpt_dist.checkpoint.training_state"):
        result = run_train(sft_config(run_copy, "train.max_steps=3"))
    assert result.step == 3
    assert _resumed_tag(run_copy) == "step_00000001"
    warning = caplog.text
    assert f"step_00000002: {run_copy / 'ckpt' / 'step_00000002' / file}" in warning and problem in warning
    assert "resuming from step_00000001" in warning


def test_damaged_only_tag_is_one_clear_error(run_copy):
    shutil.rmtree(run_copy / "ckpt" / "step_00000001")
    _truncate(run_copy / "ckpt" / "step_00000002" / OPTIM)
    with pytest.raises(CheckpointError, match=r"no complete checkpoint validates \(step_00000002: .*optim_states\.pt: "):
        run_train(sft_config(run_copy, "train.max_steps=3"))


def test_conversion_refuses_a_shard_from_another_save(run_copy):
    _from_other_save(run_copy / "ckpt" / "step_00000002" / OPTIM)
    with pytest.raises(CheckpointError, match=rf"{OPTIM}: its content is not the one saved with this tag"):
        load_weights(run_copy / "ckpt")


@pytest.mark.parametrize("override, said", [
    ("model.n_layer=3", "n_layer 2 vs 3"),
    ("model.preset=mini", "n_layer 2 vs 4"),
])
def test_run_dir_of_another_model_is_one_clear_error(run_copy, override, said):
    with pytest.raises(CheckpointError, match=rf"holds checkpoints of another model \({said}.*use a new run_dir, or "
                                              r"checkpoint\.init_from"):
        run_train(sft_config(run_copy, "train.max_steps=3", override))


def test_intact_checkpoint_resumes_from_the_newest_tag(run_copy):
    assert run_train(sft_config(run_copy, "train.max_steps=3")).step == 3
    assert _resumed_tag(run_copy) == "step_00000002"


@pytest.fixture
def small_disk(tmp_path):
    """A 30 MiB filesystem: room for one checkpoint of the test model (about 20 MB), not two."""
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"a disk-full test needs a small filesystem; mounting a tmpfs is not permitted here ({p.stderr.strip()})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_a_save_names_the_disk_and_the_checkpoint_kept(small_disk, tmp_path):
    ckpt = small_disk / "ckpt"
    cfg = sft_config(tmp_path / "run", f"checkpoint.dir={ckpt}", "checkpoint.keep_last=1")
    with pytest.raises(CheckpointError) as e:
        run_train(cfg)
    msg = str(e.value)
    assert msg.startswith(f"saving {ckpt / 'step_00000002'} failed: the disk at {ckpt} is full (")
    assert f"the last complete checkpoint, {ckpt / 'step_00000001'}, is kept" in msg
    assert "iostream" not in msg and "unexpected pos" not in msg
    assert [p.name for p in ckpt.iterdir() if (p / "COMPLETE").is_file()] == ["step_00000001"]
