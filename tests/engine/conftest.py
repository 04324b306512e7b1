"""Fixtures that run real training: sample shards built once, `gpt-dist train` launched with
the deepspeed launcher (gloo ranks on CPU) in a subprocess."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from engine_runs import Run, base_overrides, train_cmd
from testutil import REPO


@pytest.fixture(scope="session")
def sample_shards(small_vocab_shards) -> Path:
    """The engine's tests train on the 512-token BPE sample (tests/conftest.py's small_vocab_shards)."""
    return small_vocab_shards


@pytest.fixture
def run_train(sample_shards):
    def run(run_dir: Path, world: int = 2, overrides: list[str] = (), timeout: int = 300) -> Run:
        cmd = train_cmd(world, base_overrides(sample_shards, run_dir) + list(overrides))
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        return Run(p.returncode, p.stdout + p.stderr, run_dir)

    return run
