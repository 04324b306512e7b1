"""Launching `gpt-dist train` for tests: local ranks as the deepspeed launcher starts them (gloo on CPU) in a
subprocess, and reading back what the run wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testutil import BIN, REPO, rank_launcher, shard_vocab_overrides


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


def launch_runs(world: int, runs: dict[str, tuple[Path, list[str]]], shards: Path, folder: Path) -> dict[str, Run]:
    """`gpt-dist train` in each run dir with its overrides, one run after the other in one launch
    of `world` ranks (train_runs.py; its runs list is written to `folder`). Every run must exit 0."""
    argv = [["train", "configs/sample_cpu.yaml",
             *(x for o in base_overrides(shards, run_dir) + extra for x in ("--set", o))] for run_dir, extra in runs.values()]
    (folder / f"runs_{world}.json").write_text(json.dumps(argv))
    cmd = [*rank_launcher(world), str(Path(__file__).with_name("train_runs.py")), str(folder / f"runs_{world}.json")]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=800,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    port = cmd[cmd.index("--master_port") + 1]
    return {name: Run(p.returncode, p.stdout + p.stderr, run_dir, port) for name, (run_dir, _) in runs.items()}


def stopped_at(run: Run, tag: str, run_dir: Path) -> Path:
    """`run_dir` holding only `tag` of `run`'s checkpoints: the 2-rank run as if it had stopped
    there (a checkpoint saved on the cadence is the one an exit at that step saves; the exact
    resume tests resume from one written on exit). A copy, since a resume on another world
    size writes beside the tag."""
    shutil.copytree(run.run_dir / "ckpt" / tag, run_dir / "ckpt" / tag)
    return run_dir
