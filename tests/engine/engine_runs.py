"""Launching `gpt-dist train` for tests: local ranks as the deepspeed launcher starts them (gloo on CPU) in a
subprocess, and reading back what the run wrote."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from testutil import BIN, rank_launcher, shard_vocab_overrides


@dataclass
class Run:
    returncode: int
    output: str
    run_dir: Path
    port: str = ""  # the launch's master port, where there was one

    def metrics(self, split: str = "train") -> list[dict]:
        f = self.run_dir / "metrics.jsonl"
        rows = [json.loads(x) for x in f.read_text().splitlines()] if f.is_file() else []
        return [r for r in rows if r["split"] == split]

    def losses(self) -> dict[int, float]:
        return {r["step"]: r["loss"] for r in self.metrics()}

    def events(self) -> list[dict]:
        f = self.run_dir / "events.jsonl"
        return [json.loads(x) for x in f.read_text().splitlines()] if f.is_file() else []


def base_overrides(shards: Path, run_dir: Path) -> list[str]:
    """--set overrides that train on `shards` in `run_dir`, with the model's vocabulary the shards'
    tokenizer's when that is not GPT-2 (tests/conftest.py's small_vocab_shards)."""
    return shard_vocab_overrides(shards) + [
        f"run_dir={run_dir}",
        f"data.train=[{{path: {shards / 'train'}, weight: 1.0}}]",
        f"data.val={shards / 'val'}",
        "log.every_steps=1",
        "log.progress_bar=false",
    ]


def train_cmd(world: int, overrides: list[str], config: str = "configs/sample_cpu.yaml") -> list[str]:
    sets = [x for o in overrides for x in ("--set", o)]
    if world == 1:
        return [str(BIN / "gpt-dist"), "train", config, *sets]
    return [*rank_launcher(world), str(BIN / "gpt-dist"), "train", config, *sets]
