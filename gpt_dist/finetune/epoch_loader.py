"""Loaders over in-memory SFT rows / DPO pairs ("units"), with exact, world-size-independent resume.

Training visits the units in a fresh seeded shuffle each epoch, endlessly. Its position is
the number of units consumed by all ranks together: every micro-batch, rank r takes units
[p + r*B, p + (r+1)*B) of the global order and p advances by B * world_size. An optimizer
step therefore consumes the same units whatever the world size (the global batch is fixed),
and a resume on any number of ranks continues where the run stopped.

Evaluation splits the units across ranks round-robin with the same number of batches on
every rank (ZeRO-3 needs every rank in every forward); at most `world_size - 1` units of the
tail are left out.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from gpt_dist.errors import DataError


class EpochLoader:
    """Infinite micro-batches of `micro_batch_size` units for one rank.

    collate: list of unit indices -> batch dict of tensors.
    """

    def __init__(self, num_units: int, collate: Callable[[list[int]], dict[str, torch.Tensor]],
                 micro_batch_size: int, rank: int, world_size: int, seed: int, what: str):
        if num_units == 0:
            raise DataError(f"{what}: nothing to train on")
        self.num_units, self.collate, self.mbs = num_units, collate, micro_batch_size
        self.rank, self.world_size, self.seed, self.what = rank, world_size, seed, what
        self.consumed = 0
        self._epoch, self._perm = -1, None

    def _unit(self, g: int) -> int:
        epoch, i = divmod(g, self.num_units)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.num_units, generator=gen).tolist(), epoch
        return self._perm[i]

    @property
    def epoch(self) -> float:
        return self.consumed / self.num_units

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        start = self.consumed + self.rank * self.mbs
        units = [self._unit(start + i) for i in range(self.mbs)]
        self.consumed += self.mbs * self.world_size
        return self.collate(units)

    def state_dict(self) -> dict[str, Any]:
        return {"units_consumed": self.consumed, "units_per_epoch": self.num_units, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("units_per_epoch") != self.num_units or state.get("seed") != self.seed:
            raise DataError(
                f"{self.what}: the checkpoint was trained on {state.get('units_per_epoch')} units per epoch "
                f"(seed {state.get('seed')}), this run has {self.num_units} (seed {self.seed}): the data, "
                "train.seq_len, the chat template or packing changed since; restore them to resume, or start a "
                "new run from the checkpoint with checkpoint.init_from and checkpoint.resume: never"
            )
        self.consumed = int(state["units_consumed"])


class EvalBatches:
    """This rank's share of `num_units` in batches of up to `micro_batch_size`, at most `max_batches`."""

    def __init__(self, num_units: int, collate: Callable[[list[int]], dict[str, torch.Tensor]],
                 micro_batch_size: int, rank: int, world_size: int, max_batches: int, what: str):
        per_rank = num_units // world_size
        if per_rank == 0:
            raise DataError(f"{what}: {num_units} samples, fewer than the {world_size} ranks; add validation samples")
        mine = list(range(rank, per_rank * world_size, world_size))
        self.batches: list[list[int]] = [mine[i : i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]
        self.batches = self.batches[:max_batches]
        self.collate = collate

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for units in self.batches:
            yield self.collate(units)
