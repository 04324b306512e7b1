"""Fixtures that run real training: sample shards built once, `gpt-dist train` launched with
the deepspeed launcher (gloo ranks on CPU) in a subprocess."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from engine_runs import Run, base_overrides, train_cmd
from testutil import BIN, REPO

ENGINE_VOCAB = 512


@pytest.fixture(scope="session")
def sample_shards(tmp_path_factory) -> Path:
    """The built-in sample (`gpt-dist prepare --sample`, 256-token sequences) tokenized with a
    512-token byte-level BPE trained on the same text: DIR/train, DIR/val, DIR/tokenizer.

    The engine's tests train `mini` models for a few steps, again and again; with GPT-2's 50,304
    tokens about 86 % of their FLOPs per token are the LM head, with 512 about 7 %, so a step
    takes about a seventh of the FLOPs (flops_per_token; the suite's time is in
    docs/benchmarks.md). Nothing the loop does depends on the vocabulary (base_overrides sets
    the model's to the shards'); the GPT-2-tokenized sample trains in the README's runs
    (tests/test_sample_runs.py) and in the other folders' tests."""
    from gpt_dist.data.readers import sample_topics

    out = tmp_path_factory.mktemp("engine_sample_data")
    text = out / "topics.txt"
    text.write_text("\n\n".join(body for _, body in sample_topics()))
    for cmd in (["train-tokenizer", "--input", str(text), "--kind", "bpe", "--vocab-size", str(ENGINE_VOCAB),
                 "--output", str(out / "tokenizer")],
                ["prepare", "--sample", "--tokenizer", "bpe", "--tokenizer-path", str(out / "tokenizer"),
                 "--output", str(out)]):
        subprocess.run([str(BIN / "gpt-dist"), *cmd], check=True, cwd=REPO, capture_output=True)
    return out


@pytest.fixture
def run_train(sample_shards):
    def run(run_dir: Path, world: int = 2, overrides: list[str] = (), timeout: int = 300) -> Run:
        cmd = train_cmd(world, base_overrides(sample_shards, run_dir) + list(overrides))
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        return Run(p.returncode, p.stdout + p.stderr, run_dir)

    return run
