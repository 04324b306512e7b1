"""`gpt-dist bench --data SHARDS_DIR`: how many tokens per second the training loader hands one
rank, with nothing else running (no model), to show whether data can keep a GPU busy.

The loader is gpt_dist.data.loader's training loader as `gpt-dist train` builds it (the same
DataLoader workers, shuffling and shard cache), over one shard set at weight 1. `warmup`
batches are taken first (worker start-up, first shard opens) and not timed; then `batches`
batches are timed. Tokens are counted as the model sees them: micro_batch x seq_len inputs
per batch. Under a launcher (RANK / WORLD_SIZE set) each rank reads its own slice, as in
training; the figure is per rank.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from gpt_dist.errors import UserError


def train_split_dir(path: str | Path) -> Path:
    """A shard set with manifest.json, or a `gpt-dist prepare` output holding train/."""
    p = Path(path)
    if (p / "manifest.json").is_file():
        return p
    if (p / "train" / "manifest.json").is_file():
        return p / "train"
    raise UserError(f"--data {p}: no manifest.json in it or in {p / 'train'}; give a shard dir written by `gpt-dist prepare`")


def run_loader_benchmark(
    path: str | Path,
    *,
    micro_batch: int = 8,
    batches: int = 200,
    warmup: int = 3,
    workers: int | None = None,
) -> dict[str, Any]:
    """Time the training loader over the shard set at `path`; the `loader` object of `gpt-dist bench`."""
    from gpt_dist.config import DataConfig, TrainConfig
    from gpt_dist.data.loader import TrainLoader
    from gpt_dist.data.shards import read_manifest

    if micro_batch < 1:
        raise UserError(f"--micro-batch: {micro_batch} must be at least 1 sequence")
    if batches < 1:
        raise UserError(f"--batches: {batches} must be at least 1")
    if warmup < 0:
        raise UserError(f"--warmup: {warmup} must be 0 or more")
    split = train_split_dir(path)
    seq_len = read_manifest(split, key="--data").seq_len
    workers = DataConfig.num_workers if workers is None else workers  # the training default
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    loader = iter(TrainLoader([(str(split), 1.0)], seq_len=seq_len, micro_batch_size=micro_batch,
                              seed=TrainConfig.seed, rank=rank, world_size=world, num_workers=workers))
    for _ in range(warmup):
        next(loader)
    tokens = 0
    t0 = time.perf_counter()
    for _ in range(batches):
        batch = next(loader)
        tokens += batch["input_ids"].numel()
    seconds = time.perf_counter() - t0
    loader.close()  # stops the DataLoader workers now, not at garbage collection
    return {
        "data": str(split),
        "seq_len": seq_len,
        "micro_batch": micro_batch,
        "workers": workers,
        "rank": rank,
        "world_size": world,
        "batches": batches,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s_per_rank": tokens / seconds,
        "batches_per_s": batches / seconds,
    }


def format_loader_result(r: dict[str, Any]) -> str:
    return (
        f"loader       {r['data']}: {r['tokens_per_s_per_rank']:,.0f} tokens/s per rank "
        f"({r['batches_per_s']:,.1f} batches/s of {r['micro_batch']} x {r['seq_len']}, {r['workers']} worker(s), "
        f"rank {r['rank']} of {r['world_size']})"
    )
