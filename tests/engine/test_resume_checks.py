"""Two ranks resuming from a damaged checkpoint: each validates the tag before loading, so the
verdict is the same everywhere: the same fall-back, or the same one error on every rank, not a
traceback on one rank and "Connection closed by peer" on the other."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from engine_runs import Run, base_overrides, train_cmd
from testutil import REPO

pytestmark = pytest.mark.slow

OVER = ["train.micro_batch_size=2", "train.global_batch_tokens=1024", "engine.zero_stage=3",
        "checkpoint.every_steps=1", "checkpoint.keep_last=3", "eval.every_steps=1000"]
RANK1_OPTIM = "zero_pp_rank_1_mp_rank_00_optim_states.pt"


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, sample_shards):
    """step_00000001 and step_00000002 of a 2-rank ZeRO-3 run."""
    run_dir = tmp_path_factory.mktemp("two_rank") / "run"
    # a 3-step schedule stopped after step 2, so the resumes below keep the schedule
    cmd = train_cmd(2, base_overrides(sample_shards, run_dir) + OVER + ["train.max_steps=3", "train.exit_after_steps=2"])
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return Run(p.returncode, p.stdout + p.stderr, run_dir)


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run.run_dir, dst)
    return dst


@pytest.mark.timeout(400)
def test_a_missing_shard_of_one_rank_falls_back_on_every_rank(two_rank_run, run_train, tmp_path):
    run_dir = _copy(two_rank_run, tmp_path)
    (run_dir / "ckpt" / "step_00000002" / RANK1_OPTIM).unlink()
    again = run_train(run_dir, world=2, overrides=OVER + ["train.max_steps=3"])
    assert again.returncode == 0, again.output[-3000:]
    assert [e["tag"] for e in again.events() if e["event"] == "resumed"] == ["step_00000001"]
    assert f"{RANK1_OPTIM}: missing" in again.output and "resuming from step_00000001" in again.output


@pytest.mark.timeout(400)
def test_a_damaged_only_tag_is_the_same_clear_error_on_every_rank(two_rank_run, run_train, tmp_path):
    run_dir = _copy(two_rank_run, tmp_path)
    shutil.rmtree(run_dir / "ckpt" / "step_00000001")
    shard = run_dir / "ckpt" / "step_00000002" / RANK1_OPTIM
    shard.write_bytes(shard.read_bytes()[:1000])
    again = run_train(run_dir, world=2, overrides=OVER + ["train.max_steps=3"])
    assert again.returncode != 0
    said = "gpt-dist train: error: " + str(run_dir / "ckpt") + ": no complete checkpoint validates"
    assert again.output.count(said) == 2, again.output[-3000:]
    for noise in ("Connection closed by peer", "Traceback", "PytorchStreamReader", "AssertionError"):
        assert noise not in again.output, again.output[-3000:]
