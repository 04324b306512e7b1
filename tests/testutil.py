"""Small helpers shared by test modules in several folders (tests/ is on sys.path through its
conftest.py)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment's console scripts: gpt-dist, deepspeed, torchrun


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a launcher's --master_port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_launcher(world: int, port: int | None = None) -> list[str]:
    """The start of a command that runs a script on `world` local ranks as
    `deepspeed --num_gpus WORLD --master_port PORT` does (tests/rank_launcher.py)."""
    return [sys.executable, str(REPO / "tests" / "rank_launcher.py"), "--nproc", str(world),
            "--master_port", str(port or free_port())]


def shard_vocab_overrides(shards: Path) -> list[str]:
    """--set overrides giving the model the vocabulary of the tokenizer `shards` were made with,
    when that is not GPT-2's (tests/conftest.py's small_vocab_shards)."""
    import json

    from gpt_dist.data.shards import MANIFEST

    tok = json.loads((shards / "train" / MANIFEST).read_text())["tokenizer"]
    return [] if tok["kind"] == "gpt2" else [f"tokenizer.kind={tok['kind']}", f"model.vocab_size={tok['vocab_size']}"]


def write_shard_set(split_dir: Path, windows, tokenizer) -> Path:
    """A shard set in gpt_dist's format (the data package's writer), 10 sequences per shard;
    `windows` (N, seq_len + 1) integer array."""
    from gpt_dist.data.shards import Manifest, ShardWriter, write_manifest

    w = ShardWriter(split_dir, f"{split_dir.name}-t00000-", windows.shape[1] - 1, "uint16", sequences_per_shard=10)
    w.write(windows)
    write_manifest(split_dir, Manifest(split=split_dir.name, seq_len=windows.shape[1] - 1, dtype="uint16",
                                       tokenizer=tokenizer.spec(), shards=w.close()))
    return split_dir
