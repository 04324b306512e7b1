"""Helpers of the checkpoint tests: the run they share, and a file that runs code when unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def sft_config(root: Path, *extra: str):
    from gpt_dist.config import load_config

    data = root.parent / "sft.jsonl"
    if not data.is_file():
        with data.open("w") as f:
            for i in range(8):
                f.write(json.dumps({"prompt": f"Count to {i}.", "completion": " ".join(map(str, range(i + 1)))}) + "\n")
    return load_config([], [
        "stage=sft", f"run_dir={root}", "tokenizer.kind=gpt2", "model.preset=tiny", "model.block_size=64",
        f"data.train=[{{path: {data}}}]", "train.seq_len=64", "train.micro_batch_size=2",
        "train.global_batch_size=2", "train.max_steps=3", "train.precision=fp32", "engine.zero_stage=3",
        "log.progress_bar=false", "checkpoint.every_steps=1", "checkpoint.keep_last=3", *extra,
    ])


def run_train(cfg):
    from gpt_dist.engine.trainer import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(cfg)
    finally:
        torch.set_num_threads(before)


class RunsCode:
    """Pickles to a call of os.system: unpickling it creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path) -> None:
    """Replace `path` by a file whose unpickling runs code, and record it in the tag's manifest
    as if it had been saved there, so that only the weights-only load stands in its way."""
    from gpt_dist.checkpoint.manifest import write_manifest

    torch.save({"module": RunsCode(marker), "optimizer_state_dict": RunsCode(marker)}, path)
    write_manifest(path.parent)
