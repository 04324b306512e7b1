"""The DPO objective (Rafailov et al. 2023) and the frozen reference model's log-probabilities.

    loss = -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))])
           + alpha * NLL(y_w|x)

with log-probabilities summed over the reply tokens only (the reply and its end-of-text).
The second term (`finetune.dpo_nll_weight` = alpha, 0 by default: plain DPO) is RPO's
negative log-likelihood of the chosen reply (Pang et al. 2024, "Iterative Reasoning Preference
Optimization"). DPO alone only widens the margin, and usually does so by lowering both replies'
likelihood, which can move a small model's greedy answer off the chosen one; the NLL term keeps
the chosen reply likely. See `chosen_nll` for its normalisation.
The reference is the starting weights (`checkpoint.init_from`). It never changes, so its
log-probabilities are computed once, by the policy engine itself before its first update (no
second model in memory), in one no-grad pass over the pairs split over the ranks and gathered;
it costs about a third of one epoch of training compute. The tables are saved with every
checkpoint, so a resumed run does not score them again.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from gpt_dist.engine.distributed import DistInfo
from gpt_dist.engine.objectives import IGNORE_INDEX

log = logging.getLogger(__name__)


def token_nll(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, T) fp32 -log p(target) per position, 0 where there is no label; input_ids, labels (N, T)."""
    return model(input_ids, labels, reduction="none")


def sequence_logps(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) fp32 sum of log p(target) over the positions with a label; input_ids, labels (N, T)."""
    return -token_nll(model, input_ids, labels).sum(dim=-1)


def chosen_nll(nll: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) per-token mean NLL (nats) of each pair's chosen reply.

    nll, labels: (2B, T), the B chosen sequences then the B rejected ones (`token_nll`).
    Each pair's own reply is averaged over its own tokens, so the term is one number per pair
    and the step's sum over pairs divided by the step's pairs does not depend on how the pairs
    are split into micro-batches and ranks. TRL's DPOTrainer (the "sft" loss type, formerly
    `rpo_alpha`) instead averages over all chosen tokens of a micro-batch, which weighs a pair
    by its reply length and changes with the micro-batch.
    """
    b = nll.shape[0] // 2
    replies = labels[:b] != IGNORE_INDEX
    return nll[:b].sum(dim=-1) / replies.sum(dim=-1).clamp(min=1)


def dpo_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float):
    """Per-pair loss, chosen and rejected rewards, each (B,).

    policy_logps, ref_logps: (2B,) log-probabilities of the B chosen replies, then the B rejected ones.
    The rewards are beta * (log pi - log ref), the implicit reward DPO optimises.
    """
    b = policy_logps.shape[0] // 2
    rewards = beta * (policy_logps - ref_logps)
    chosen, rejected = rewards[:b], rewards[b:]
    return -F.logsigmoid(chosen - rejected), chosen, rejected


def dpo_metric_sums(chosen: torch.Tensor, rejected: torch.Tensor, nll: torch.Tensor,
                    preference: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logged with the loss, summed over the B pairs (the loop divides by the step's pairs):
    pairs ranked right, margin, rewards, the chosen replies' per-token NLL (`chosen_nll`, nats)
    and the preference term alone (the loss without the NLL term). All (B,) inputs."""
    chosen, rejected = chosen.detach(), rejected.detach()
    return {
        "reward_accuracy": (chosen > rejected).float().sum(),
        "reward_margin": (chosen - rejected).sum(),
        "reward_chosen": chosen.sum(),
        "reward_rejected": rejected.sum(),
        "chosen_nll": nll.detach().sum(),
        "preference_loss": preference.detach().sum(),
    }


@torch.no_grad()
def reference_logps(
    model, dist: DistInfo, splits: Sequence[tuple[int, Callable[[list[int]], dict[str, torch.Tensor]]]],
    batch_size: int,
) -> list[torch.Tensor]:
    """For each (num_pairs, collate) split: a (num_pairs, 2) float64 CPU table of [chosen, rejected]
    log-probs under `model` (collate: pair indices -> pair_batch).

    `model` is the policy engine before its first update: the reference is its starting weights,
    in the training precision, so at step 0 policy and reference agree exactly and the loss is
    log 2, and no second model is held. Each rank scores every world_size-th pair; every rank
    runs the same number of forward passes (ZeRO-3 gathers parameters in each), the short ones
    repeating a pair whose result is dropped; an all-reduce gives every rank the whole table.
    """
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    tables = []
    for num_pairs, collate in splits:
        out = torch.zeros(num_pairs, 2, dtype=torch.float64, device=dist.device)
        mine = list(range(dist.rank, num_pairs, dist.world_size))
        per_rank = -(-num_pairs // dist.world_size)
        padded = mine + [mine[0] if mine else 0] * (per_rank - len(mine))
        for i in range(0, per_rank, batch_size):
            idx = padded[i : i + batch_size]
            keep = max(0, min(len(idx), len(mine) - i))
            batch = collate(idx)
            lp = sequence_logps(model, batch["input_ids"].to(dist.device), batch["labels"].to(dist.device)).double()
            out[idx[:keep], 0] = lp[:keep]
            out[idx[:keep], 1] = lp[len(idx) : len(idx) + keep]
        if torch.distributed.is_initialized() and dist.world_size > 1:
            torch.distributed.all_reduce(out)
        tables.append(out.cpu())
    model.train(was_training)
    if dist.is_main:
        log.info("dpo: reference log-probs of %s pairs scored by the starting weights in %.1fs",
                 "+".join(str(n) for n, _ in splits), time.perf_counter() - t0)
    return tables


def attach_reference(batch: dict[str, torch.Tensor], table: torch.Tensor, idx: Sequence[int]) -> dict[str, torch.Tensor]:
    """Add `ref_logps` (2B,) fp32 to a pair batch: the chosen values, then the rejected ones."""
    rows = table[list(idx)]
    batch["ref_logps"] = torch.cat([rows[:, 0], rows[:, 1]]).float()
    return batch
