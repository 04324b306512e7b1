"""The global sample order of the training loader: pure index arithmetic, no I/O, no torch.

The training data is one infinite, deterministic sequence of samples S_0, S_1, ... that depends
only on the shard sets, their weights, the seed and the shuffle window, never on the number of
ranks or workers. Rank r of W takes samples [g*W*B + r*B, g*W*B + (r+1)*B) in global round g,
so the loader's whole state is the global position (samples consumed) plus how many of them
came from each source, and a run resumed on another world size continues the same sequence.

Two pieces:
- MixSchedule decides which source each global sample comes from: a weighted draw, seeded per
  block of MIX_BLOCK positions so any position can be reproduced without replaying the past.
- SourceOrder says which (shard, sample) the k-th draw from one source is: each epoch, a new
  permutation of the shards; consecutive shards are grouped into windows of `window` shards and
  the samples of a window are permuted together. Reads stay within a few shards at a time
  (memory-mapped, page cache friendly) while neighbours in a batch come from different shards.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

MIX_BLOCK = 4096
_TAG_SHARDS, _TAG_WINDOW, _TAG_MIX = 1, 2, 3


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


class SourceOrder:
    """Maps per-source positions k = 0, 1, 2, ... (across epochs) to (shard index, sample in shard)."""

    def __init__(self, counts: Sequence[int], seed: int, source_index: int, window: int):
        self.counts = np.asarray(counts, dtype=np.int64)
        if self.counts.size == 0 or self.counts.sum() == 0:
            raise ValueError("a source needs at least one sample")
        self.total = int(self.counts.sum())
        self.key = (seed, source_index)
        self.window = max(1, window)
        self._epochs: OrderedDict[int, tuple[list[np.ndarray], np.ndarray]] = OrderedDict()
        self._windows: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()

    def _epoch(self, epoch: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Shard groups of an epoch and the first position of each group within the epoch."""
        if epoch not in self._epochs:
            perm = _rng(*self.key, _TAG_SHARDS, epoch).permutation(self.counts.size)
            groups = [perm[i:i + self.window] for i in range(0, perm.size, self.window)]
            starts = np.concatenate([[0], np.cumsum([self.counts[g].sum() for g in groups])])
            self._epochs[epoch] = (groups, starts)
            while len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def _window(self, epoch: int, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(permutation of the window's samples, its shard indices, their start offsets)."""
        if (epoch, g) not in self._windows:
            groups, _ = self._epoch(epoch)
            shards = groups[g]
            offsets = np.concatenate([[0], np.cumsum(self.counts[shards])])
            perm = _rng(*self.key, _TAG_WINDOW, epoch, g).permutation(int(offsets[-1]))
            self._windows[(epoch, g)] = (perm, shards, offsets)
            while len(self._windows) > 4:
                self._windows.popitem(last=False)
        return self._windows[(epoch, g)]

    def locate(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, sample index in that shard) for each per-source position in `k`."""
        k = np.asarray(k, dtype=np.int64)
        shard = np.empty_like(k)
        local = np.empty_like(k)
        epoch, j = np.divmod(k, self.total)
        for e in np.unique(epoch):
            in_e = np.flatnonzero(epoch == e)
            _, starts = self._epoch(int(e))
            g = np.searchsorted(starts, j[in_e], side="right") - 1
            for gi in np.unique(g):
                sel = in_e[g == gi]
                perm, shards, offsets = self._window(int(e), int(gi))
                q = perm[j[sel] - starts[gi]]
                pos = np.searchsorted(offsets, q, side="right") - 1
                shard[sel] = shards[pos]
                local[sel] = q - offsets[pos]
        return shard, local


class MixSchedule:
    """Which source each global sample comes from, and that source's running position.

    `position` is the number of global samples consumed; `source_positions[s]` how many of them
    came from source s. Both are the loader's checkpointed state.
    """

    def __init__(self, weights: Sequence[float], seed: int, position: int = 0,
                 source_positions: Sequence[int] | None = None):
        w = np.asarray(weights, dtype=np.float64)
        if w.size == 0 or (w <= 0).any():
            raise ValueError(f"weights must be positive, got {list(weights)}")
        self.cum = np.cumsum(w / w.sum())
        self.seed = seed
        self.position = int(position)
        self.source_positions = np.array(source_positions if source_positions is not None else [0] * w.size,
                                         dtype=np.int64)
        self._cached: tuple[int, np.ndarray] = (-1, np.empty(0, dtype=np.int64))

    def _block(self, block: int) -> np.ndarray:
        if self._cached[0] != block:
            u = _rng(self.seed, _TAG_MIX, block).random(MIX_BLOCK)
            self._cached = (block, np.minimum(np.searchsorted(self.cum, u, side="right"), self.cum.size - 1))
        return self._cached[1]

    def _sources(self, start: int, stop: int) -> np.ndarray:
        if self.cum.size == 1:
            return np.zeros(stop - start, dtype=np.int64)
        parts = []
        for block in range(start // MIX_BLOCK, (stop - 1) // MIX_BLOCK + 1):
            lo, hi = max(start, block * MIX_BLOCK), min(stop, (block + 1) * MIX_BLOCK)
            parts.append(self._block(block)[lo - block * MIX_BLOCK: hi - block * MIX_BLOCK])
        return np.concatenate(parts)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The next `n` global samples as (source index, per-source position); advances the state."""
        src = self._sources(self.position, self.position + n)
        k = np.empty(n, dtype=np.int64)
        for s in range(self.cum.size):
            sel = np.flatnonzero(src == s)
            k[sel] = self.source_positions[s] + np.arange(sel.size)
            self.source_positions[s] += sel.size
        self.position += n
        return src, k
