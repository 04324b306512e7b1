"""A real training run's checkpoints, made in process (one gloo rank, ZeRO-3, a tiny GPT-2 on
SFT rows): tags step_00000001 and step_00000002 of a
3-step schedule. Tests copy the run dir and damage the copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from checkpoint_helpers import run_train, sft_config


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt_run") / "run"
    run_train(sft_config(root, "train.exit_after_steps=2"))  # the schedule runs to 3; resumes finish it
    return root


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst
