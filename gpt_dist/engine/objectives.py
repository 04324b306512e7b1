"""What differs between pre-training, continued pre-training, SFT and DPO: the data and the
objective. The training loop (gpt_dist.engine.trainer) is the same for all of them.

An objective returns *sums*, never means: its summed loss over a micro-batch and, known from the
batch alone before any forward pass, the count that sum runs over (trained tokens; pairs for
DPO). The loop divides every micro-batch's sum by the count of the whole optimizer step, all
micro-batches and all ranks together, so the loss, the gradient and grad_norm are the same
however the global batch is split (torchtitan's and OLMo-core's normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Protocol

import torch

from gpt_dist.config import Config
from gpt_dist.engine.distributed import DistInfo
from gpt_dist.errors import UserError

IGNORE_INDEX = -100


class Counts(NamedTuple):
    """What one micro-batch holds, each a 0-d integer tensor, known before any forward pass."""

    units: torch.Tensor  # what the loss is summed over: trained tokens, or DPO pairs
    tokens: torch.Tensor  # real input tokens (padding left out)
    trained_tokens: torch.Tensor  # positions that carry a label


@dataclass
class LossSum:
    """One micro-batch's objective: `loss` the 0-d sum over `count` units (the count
    `Objective.count` gave for the same batch); `metrics` further 0-d sums over the same units,
    logged divided by the step's count (e.g. DPO's reward accuracy)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(Protocol):
    # Validation reports exp(loss) as perplexity only when the loss is a per-token NLL
    # (pre-training, CPT, SFT); an objective that is something else sets this False.
    val_perplexity: bool

    def tokenizer(self, cfg: Config) -> Any:
        """The run's tokenizer (gpt_dist.data.tokenizer); optional: without it (or when it returns
        None) the trainer loads cfg.tokenizer. Pre-training and CPT take the one their shards'
        manifest names."""

    def train_loader(self, cfg: Config, dist: DistInfo, tokenizer) -> Any:
        """An infinite iterable of micro-batches (dicts of tensors) with state_dict() / load_state_dict()."""

    def val_loader(self, cfg: Config, dist: DistInfo, tokenizer) -> Iterable[dict[str, torch.Tensor]] | None: ...

    def count(self, batch: dict[str, torch.Tensor]) -> Counts:
        """The batch's counts, from the batch alone (no forward pass)."""

    def loss(self, model, batch: dict[str, torch.Tensor]) -> LossSum:
        """The summed training loss of this micro-batch."""

    def eval_loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(summed loss, number of units it is summed over), optionally followed by a dict of
        further 0-d sums over the same units, reported divided by the units (DPO's rewards)."""

    def start(self, model, dist: DistInfo) -> None:
        """Called once on every rank with the engine, after any resume and before the first
        update (DPO scores its reference log-probabilities here)."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state saved with each checkpoint."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def trained_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """0-d count of positions that carry a loss (labels != IGNORE_INDEX)."""
    return (batch["labels"] != IGNORE_INDEX).sum()


def unpadded_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """0-d count of real input positions of right-padded rows: each row up to its last labelled
    position (padding sits after it and carries no label)."""
    labelled = batch["labels"] != IGNORE_INDEX  # (B, T)
    t = labelled.shape[1]
    positions = torch.arange(1, t + 1, device=labelled.device)
    return (labelled * positions).amax(dim=1).sum()


class LanguageModeling:
    """Next-token prediction on packed token windows: pre-training and continued pre-training
    (whose replay of general data is just another weighted source in data.train). Every
    position is a real token and carries a loss."""

    val_perplexity = True

    def tokenizer(self, cfg):
        from gpt_dist.data.shard_tokenizer import shards_tokenizer

        return shards_tokenizer(cfg)

    def train_loader(self, cfg, dist, tokenizer):
        from gpt_dist.data.shard_loader import build_train_loader, check_tokenizer_matches

        loader = build_train_loader(cfg, rank=dist.rank, world_size=dist.world_size)
        check_tokenizer_matches(loader.tokenizer_spec, tokenizer)
        return loader

    def val_loader(self, cfg, dist, tokenizer):
        if not cfg.data.val:
            return None
        from gpt_dist.data.shard_loader import build_val_loader

        return build_val_loader(cfg, rank=dist.rank, world_size=dist.world_size)

    def count(self, batch):
        n = trained_tokens(batch)
        return Counts(n, torch.tensor(batch["input_ids"].numel(), device=n.device), n)

    def loss(self, model, batch):
        return LossSum(model(batch["input_ids"], batch["labels"], reduction="sum"))

    def eval_loss(self, model, batch):
        return model(batch["input_ids"], batch["labels"], reduction="sum"), trained_tokens(batch)

    def start(self, model, dist):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def build_objective(cfg: Config) -> Objective:
    if cfg.stage in ("pretrain", "cpt"):
        return LanguageModeling()
    from gpt_dist.finetune.objectives import DPO, SFT

    if cfg.stage == "sft":
        return SFT()
    if cfg.stage == "dpo":
        return DPO(beta=cfg.finetune.dpo_beta, nll_weight=cfg.finetune.dpo_nll_weight)
    raise UserError(f"stage: '{cfg.stage}' is not one of pretrain, cpt, sft, dpo")
