"""The DPO objective (Rafailov et al. 2023) and the frozen reference model's log-probabilities.

    loss = -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))])

with log-probabilities summed over the reply tokens only (the reply and its end-of-text).
The reference is the starting weights (`checkpoint.init_from`). It never changes, so its
log-probabilities are computed once, in one no-grad pass over the pairs before training,
instead of keeping a second model in memory for the whole run: the pass is split over the
ranks and gathered, costs about a third of one epoch of training compute, and is repeated
on resume (it is deterministic, so a resumed run sees the same values).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gpt_dist.config import Config
from gpt_dist.engine.distributed import DistInfo

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def sequence_logps(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) fp32 sum of log p(target) over the positions with a label; input_ids, labels (N, T)."""
    return -model(input_ids, labels, reduction="none").sum(dim=-1)


def dpo_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float):
    """Per-pair loss, chosen and rejected rewards, each (B,).

    policy_logps, ref_logps: (2B,) log-probabilities of the B chosen replies, then the B rejected ones.
    The rewards are beta * (log pi - log ref), the implicit reward DPO optimises.
    """
    b = policy_logps.shape[0] // 2
    rewards = beta * (policy_logps - ref_logps)
    chosen, rejected = rewards[:b], rewards[b:]
    return -F.logsigmoid(chosen - rejected), chosen, rejected


def dpo_metric_sums(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logged with the loss, summed over the B pairs (the loop divides by the step's pairs):
    pairs ranked right, margin, rewards."""
    chosen, rejected = chosen.detach(), rejected.detach()
    return {
        "reward_accuracy": (chosen > rejected).float().sum(),
        "reward_margin": (chosen - rejected).sum(),
        "reward_chosen": chosen.sum(),
        "reward_rejected": rejected.sum(),
    }


@torch.no_grad()
def reference_logps(
    cfg: Config, dist: DistInfo, splits: Sequence[tuple[int, Callable[[list[int]], dict[str, torch.Tensor]]]],
    batch_size: int,
) -> list[np.ndarray]:
    """For each (num_pairs, collate) split: a (num_pairs, 2) float64 table of [chosen, rejected]
    log-probs under `checkpoint.init_from`'s weights (collate: pair indices -> pair_batch).

    The reference runs in the training precision so that at step 0, where the policy has the
    same weights, both give the same numbers and the loss is log 2. Each rank scores every
    world_size-th pair; an all-reduce gives every rank the whole table.
    """
    from gpt_dist.engine.checkpointing import load_init_weights
    from gpt_dist.model.gpt import GPT

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # leave the policy's initialisation RNG untouched
        ref = GPT(cfg.model)
    load_init_weights(ref, cfg.checkpoint.init_from, cfg.model)
    ref = ref.to(device=dist.device, dtype=_DTYPES[cfg.train.precision]).eval()
    tables = []
    for num_pairs, collate in splits:
        out = torch.zeros(num_pairs, 2, dtype=torch.float64, device=dist.device)
        mine = list(range(dist.rank, num_pairs, dist.world_size))
        for i in range(0, len(mine), batch_size):
            idx = mine[i : i + batch_size]
            batch = collate(idx)
            lp = sequence_logps(ref, batch["input_ids"].to(dist.device), batch["labels"].to(dist.device)).double()
            out[idx, 0] = lp[: len(idx)]
            out[idx, 1] = lp[len(idx) :]
        if torch.distributed.is_initialized() and dist.world_size > 1:
            torch.distributed.all_reduce(out)
        tables.append(out.cpu().numpy())
    del ref
    if dist.device.type == "cuda":
        torch.cuda.empty_cache()
    if dist.is_main:
        log.info("dpo: reference log-probs of %s pairs from %s in %.1fs", "+".join(str(n) for n, _ in splits),
                 cfg.checkpoint.init_from, time.perf_counter() - t0)
    return tables


def attach_reference(batch: dict[str, torch.Tensor], table: np.ndarray, idx: Sequence[int]) -> dict[str, torch.Tensor]:
    """Add `ref_logps` (2B,) fp32 to a pair batch: the chosen values, then the rejected ones."""
    rows = table[list(idx)]
    batch["ref_logps"] = torch.from_numpy(np.concatenate([rows[:, 0], rows[:, 1]]).astype(np.float32))
    return batch
