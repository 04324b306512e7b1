"""Fixtures for the generation tests: a small fine-tuned checkpoint (GPT-2 tokenizer, the built-in
chat template) for the command-line tests. Random in-memory models: generation_helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def chat_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint dir from 2 SFT steps of a tiny GPT-2-vocabulary model (weights barely trained:
    the CLI tests check the mechanics, tests/finetune checks what a trained model answers)."""
    from gpt_dist.config import load_config
    from gpt_dist.engine.trainer import train

    root = tmp_path_factory.mktemp("chat_ckpt")
    with (root / "sft.jsonl").open("w") as f:
        for i in range(8):
            f.write(json.dumps({"prompt": f"Count to {i}.", "completion": " ".join(map(str, range(i + 1)))}) + "\n")
    cfg = load_config([], [
        "stage=sft", f"run_dir={root / 'run'}", "tokenizer.kind=gpt2", "model.preset=tiny", "model.block_size=64",
        f"data.train=[{{path: {root / 'sft.jsonl'}}}]", "train.seq_len=64", "train.micro_batch_size=2",
        "train.global_batch_size=2", "train.max_steps=2", "train.precision=fp32", "engine.zero_stage=0",
        "log.progress_bar=false", "checkpoint.every_steps=1000",
    ])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg)
    finally:
        torch.set_num_threads(before)
    return root / "run" / "ckpt"
