"""How one optimizer step's global batch splits over micro-batches and data-parallel ranks.

Computed once per run, from the config and the world size (`run_geometry`), and handed to the
DeepSpeed config builder and the training loop; nothing else derives accumulation steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpt_dist.config import Config, ConfigError, TrainConfig


@dataclass(frozen=True)
class BatchGeometry:
    """How one optimizer step's global batch is split, computed once per run by batch_geometry().

    A unit is a sequence of seq_len positions (pretrain/CPT window, SFT row) or, for DPO, a
    preference pair (two sequences). Each rank runs `grad_accum` micro-batches of
    `micro_batch_size` units per optimizer step.
    """

    unit: str  # "sequence" or "pair"
    seq_len: int
    micro_batch_size: int
    grad_accum: int
    world_size: int

    @property
    def global_batch_size(self) -> int:
        """Units per optimizer step, all ranks and micro-batches together."""
        return self.micro_batch_size * self.grad_accum * self.world_size

    @property
    def sequences_per_unit(self) -> int:
        return 2 if self.unit == "pair" else 1

    @property
    def positions_per_step(self) -> int:
        """Token positions of one optimizer step, padding included (the step budget's unit)."""
        return self.global_batch_size * self.sequences_per_unit * self.seq_len

    def deepspeed(self) -> dict[str, int]:
        """The batch keys of a DeepSpeed config (DeepSpeed counts a DPO pair as one sample)."""
        return dict(train_micro_batch_size_per_gpu=self.micro_batch_size, gradient_accumulation_steps=self.grad_accum,
                    train_batch_size=self.global_batch_size)


def batch_geometry(t: TrainConfig, seq_len: int, stage: str, world_size: int) -> BatchGeometry:
    """The split of train.global_batch_tokens / global_batch_size over micro-batches and ranks,
    checked to be whole (ConfigError naming the sizes that would be)."""
    unit = "pair" if stage == "dpo" else "sequence"
    per_round = t.micro_batch_size * world_size  # units of one micro-batch on every rank
    if t.global_batch_tokens is not None:
        key, total, per_step = "train.global_batch_tokens", t.global_batch_tokens, per_round * seq_len
        what, parts = f"{total}", f"micro_batch_size ({t.micro_batch_size}) x seq_len ({seq_len})"
    else:
        key, total, per_step = "train.global_batch_size", t.global_batch_size or 0, per_round
        what, parts = f"{total} {unit}s", f"micro_batch_size ({t.micro_batch_size})"
    if total <= 0 or total % per_step != 0:
        lo = max(1, total // per_step) * per_step
        hi = lo + per_step
        raise ConfigError(
            f"{key}: {what} is not a multiple of {parts} x data-parallel ranks ({world_size}) = {per_step}; "
            f"use {lo} ({lo // per_step} accumulation steps) or {hi} ({hi // per_step}), or change train.micro_batch_size"
        )
    return BatchGeometry(unit=unit, seq_len=seq_len, micro_batch_size=t.micro_batch_size,
                         grad_accum=total // per_step, world_size=world_size)


def run_geometry(cfg: Config, world_size: int) -> BatchGeometry:
    """batch_geometry() of a whole run config."""
    return batch_geometry(cfg.train, cfg.seq_len, cfg.stage, world_size)


def total_steps(t: TrainConfig, geometry: BatchGeometry) -> int:
    """Optimizer steps of the run: train.max_steps, else train.max_tokens over the positions of
    one step (the same whatever the world size: the global batch is fixed)."""
    if t.max_steps is not None:
        return t.max_steps
    return max(1, math.ceil(t.max_tokens / geometry.positions_per_step))
