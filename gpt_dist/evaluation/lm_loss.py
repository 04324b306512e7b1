"""Validation loss as the training loop reports it: the mean over every counted target token
(token-weighted, not a mean of per-batch means), summed across data-parallel ranks.

    result = evaluate_loss(model, build_val_loader(cfg, rank, world_size), device)
    result.loss, result.perplexity, result.tokens
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
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
