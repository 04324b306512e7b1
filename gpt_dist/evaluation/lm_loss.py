"""Validation loss as the training loop reports it: the mean over every counted target token
(token-weighted, not a mean of per-batch means), summed across data-parallel ranks.

    result = evaluate_loss(model, build_val_loader(cfg, rank, world_size), device)
    result.loss, result.perplexity, result.tokens

`gpt-dist eval --data` passes `every_sequence(...)` instead: each sequence of the shard set
exactly once over all ranks, the last micro-batch shorter if need be (the training loop's
validation loader takes whole rounds only, as ZeRO-3 needs every rank in every forward pass).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from gpt_dist.model.gpt import IGNORE_INDEX

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class LossResult:
    loss: float  # nats per token, mean over all counted target tokens of all ranks
    perplexity: float  # exp(loss)
    tokens: int  # target tokens counted (labels != IGNORE_INDEX), all ranks
    sequences: int  # rows of the batches, all ranks
    batches: int  # micro-batches, all ranks

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast over fp32 weights, or nothing for fp32. The loss is fp32 either way."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def every_sequence(
    split_dir: str | Path, manifest, micro_batch: int, rank: int = 0, world_size: int = 1,
    max_batches: int | None = None, verify: bool = True,
) -> Iterator[dict[str, torch.Tensor]]:
    """Micro-batches {"input_ids", "labels"}: (<= micro_batch, seq_len) int64 of a shard set.

    Rank r takes sequences r, r + W, r + 2W, ... of the set (shards in manifest order), so over
    all ranks every sequence is taken once; a rank's last batch holds what is left.
    `max_batches` stops each rank after that many batches.
    """
    import numpy as np

    from gpt_dist.data.shards import read_tokens

    pending: list[np.ndarray] = []
    held = batches = 0
    first = 0  # global index of the current shard's first sequence
    for record in manifest.shards:
        rows = read_tokens(Path(split_dir) / record.name, record, manifest.seq_len, manifest.dtype, verify=verify)
        mine = rows[(rank - first) % world_size::world_size]
        first += len(rows)
        while len(mine):
            take = mine[: micro_batch - held]
            mine = mine[len(take):]
            pending.append(take)
            held += len(take)
            if held == micro_batch:
                yield _windows_to_batch(np.concatenate(pending))
                pending, held, batches = [], 0, batches + 1
                if max_batches is not None and batches >= max_batches:
                    return
    if held:
        yield _windows_to_batch(np.concatenate(pending))


def _windows_to_batch(windows) -> dict[str, torch.Tensor]:
    """(B, T + 1) token windows -> inputs and labels, the same windows shifted by one."""
    x = torch.from_numpy(windows.astype("int64"))
    return {"input_ids": x[:, :-1].contiguous(), "labels": x[:, 1:].contiguous()}


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device,
    precision: str = "fp32",
) -> LossResult:
    """Loss over `batches` of {"input_ids": (B, T) int64, "labels": (B, T) int64}.

    `model(input_ids, labels, reduction="sum")` must return the summed fp32 cross-entropy over
    the labels that are not IGNORE_INDEX (as gpt_dist's GPT does). Under torch.distributed
    the sums and counts of every rank are added, so every rank returns the same result.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, tokens, sequences, batches
    for batch in batches:
        x = batch["input_ids"].to(device, non_blocking=True)
        y = batch["labels"].to(device, non_blocking=True)
        with autocast(device, precision):
            loss_sum = model(x, y, reduction="sum")
        sums[0] += loss_sum.double()
        sums[1] += (y != IGNORE_INDEX).sum()
        sums[2] += x.shape[0]
        sums[3] += 1
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(sums)
    model.train(was_training)
    total, tokens, sequences, n_batches = sums.tolist()
    if tokens == 0:
        raise ValueError("no target tokens to evaluate: the batches were empty or every label was IGNORE_INDEX")
    loss = total / tokens
    return LossResult(loss=loss, perplexity=_exp(loss), tokens=int(tokens), sequences=int(sequences), batches=int(n_batches))


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")
