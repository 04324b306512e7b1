"""Fixtures for the conversion tests: real DeepSpeed checkpoints (one launcher run with 2 gloo
ranks writes a ZeRO-0, a ZeRO-2 bf16 and a ZeRO-3 checkpoint, and ZeRO-1 and ZeRO-3 LoRA ones), random tiny models on both
sides, and the GPT-2 tokenizer."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conversion_helpers import random_hf_gpt2

from gpt_dist.config import TokenizerConfig
from gpt_dist.conversion.hf_tokenizer import save_hf_tokenizer
from gpt_dist.data.tokenizer import load_tokenizer
from testutil import REPO, rank_launcher

WRITER = Path(__file__).with_name("ds_checkpoint_writer.py")
DS_RUNS = ("zero0_fp32", "zero2_bf16", "zero3_fp32", "zero1_fp32_lora", "zero3_fp32_lora")



@pytest.fixture(scope="session")
def ds_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """run name -> checkpoint dir, each with step_00000003/ and reference.pt (see the writer)."""
    out = tmp_path_factory.mktemp("ds_checkpoints")
    runs = [name[4:].replace("_", ":") for name in DS_RUNS]  # "0:fp32", ..., "3:fp32:lora"
    cmd = [
        *rank_launcher(2),
        str(WRITER),
        "--out",
        str(out),
        "--runs",
        *runs,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"DeepSpeed run failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return {name: out / name for name in DS_RUNS}


@pytest.fixture
def ds_copy(ds_checkpoints, tmp_path):
    """A private copy of one DeepSpeed checkpoint, for tests that damage it."""

    def copy(name: str) -> Path:
        dst = tmp_path / f"copy_{name}"
        shutil.copytree(ds_checkpoints[name], dst)
        return dst

    return copy


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    return load_tokenizer(TokenizerConfig(kind="gpt2"))


@pytest.fixture(scope="session")
def hf_gpt2_dir(tmp_path_factory, gpt2_tokenizer) -> Path:
    """A save_pretrained directory of a random tiny GPT2LMHeadModel with the GPT-2 tokenizer."""
    d = tmp_path_factory.mktemp("hf_gpt2")
    random_hf_gpt2(seed=1).save_pretrained(d)
    save_hf_tokenizer(gpt2_tokenizer, d, chat_template=None, model_max_length=64)
    return d
