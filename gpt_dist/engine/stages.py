"""What differs between pre-training, continued pre-training, SFT and DPO: the data and the
loss. The training loop (gpt_dist.engine.trainer) is the same for all of them."""

from __future__ import annotations

from typing import Any, Iterable, Protocol

import torch

from gpt_dist.config import Config
from gpt_dist.engine.distributed import DistInfo
from gpt_dist.errors import UserError


class Stage(Protocol):
    # Validation reports exp(loss) as perplexity only when the loss is a per-token NLL
    # (pre-training, CPT, SFT); a stage whose objective is something else sets this False.
    val_perplexity: bool

    def train_loader(self, cfg: Config, dist: DistInfo, tokenizer) -> Any:
        """An infinite iterable of batches with state_dict() / load_state_dict()."""

    def val_loader(self, cfg: Config, dist: DistInfo, tokenizer) -> Iterable[dict[str, torch.Tensor]] | None: ...

    def loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(mean loss over this micro-batch, extra per-micro-batch metrics as 0-d tensors)."""

    def eval_loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss, number of tokens it is summed over)."""


class LanguageModeling:
    """Next-token prediction on packed token windows: pre-training and continued pre-training
    (whose replay of general data is just another weighted source in data.train)."""

    val_perplexity = True

    def train_loader(self, cfg, dist, tokenizer):
        from gpt_dist.data.loader import build_train_loader, check_tokenizer_matches

        loader = build_train_loader(cfg, rank=dist.rank, world_size=dist.world_size)
        check_tokenizer_matches(loader.tokenizer_spec, tokenizer)
        return loader

    def val_loader(self, cfg, dist, tokenizer):
        if not cfg.data.val:
            return None
        from gpt_dist.data.loader import build_val_loader

        return build_val_loader(cfg, rank=dist.rank, world_size=dist.world_size)

    def loss(self, model, batch):
        return model(batch["input_ids"], batch["labels"]), {}

    def eval_loss(self, model, batch):
        labels = batch["labels"]
        return model(batch["input_ids"], labels, reduction="sum"), (labels != -100).sum()


def build_stage(cfg: Config) -> Stage:
    if cfg.stage in ("pretrain", "cpt"):
        return LanguageModeling()
    from gpt_dist.finetune.stages import DPO, SFT

    if cfg.stage == "sft":
        return SFT()
    if cfg.stage == "dpo":
        return DPO(beta=cfg.finetune.dpo_beta)
    raise UserError(f"stage: '{cfg.stage}' is not one of pretrain, cpt, sft, dpo")
