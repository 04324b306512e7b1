"""SFT samples -> fixed-length rows, packed (several samples per row) or padded (one per row).

A sample of n tokens gives n - 1 (input, target) positions. Packed rows hold whole samples
only, placed by best-fit decreasing; each sample is its own attention segment with positions
restarting at 0, so a packed row computes exactly what its samples would alone
(GPT.forward's `segment_ids` / `position_ids`). Targets are IGNORE_INDEX wherever a token
carries no loss: prompts, padding, and the first token of every sample.
"""

from __future__ import annotations

import bisect
from typing import Sequence

import numpy as np
import torch

from gpt_dist.model.gpt import IGNORE_INDEX


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Sample indices per row; `lengths` are positions (tokens - 1), each <= `capacity`.

    Best-fit decreasing: longest first, each into the fullest row it still fits in. Rows come
    out in creation order; deterministic for the same lengths.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row index), sorted
    for i in order:
        need = lengths[i]
        if need > capacity:
            raise ValueError(f"sample {i} needs {need} positions, more than the row's {capacity}")
        j = bisect.bisect_left(free, (need, -1))
        if j == len(free):
            rows.append([i])
            room, row = capacity - need, len(rows) - 1
        else:
            room, row = free.pop(j)
            rows[row].append(i)
            room -= need
        if room > 0:
            bisect.insort(free, (room, row))
    return rows


def packed_batch(rows: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Rows of (ids, trained) samples -> (B, seq_len) input_ids, labels, position_ids, segment_ids."""
    b = len(rows)
    input_ids = np.full((b, seq_len), pad_id, dtype=np.int64)
    labels = np.full((b, seq_len), IGNORE_INDEX, dtype=np.int64)
    position_ids = np.zeros((b, seq_len), dtype=np.int64)
    segment_ids = np.zeros((b, seq_len), dtype=np.int64)
    for r, row in enumerate(rows):
        at = 0
        for s, (ids, trained) in enumerate(row):
            n = len(ids) - 1
            input_ids[r, at : at + n] = ids[:-1]
            labels[r, at : at + n] = np.where(trained[1:], ids[1:], IGNORE_INDEX)
            position_ids[r, at : at + n] = np.arange(n)
            segment_ids[r, at : at + n] = s
            at += n
        segment_ids[r, at:] = len(row)  # padding: a segment of its own, attending to nothing real
    return {
        "input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels),
        "position_ids": torch.from_numpy(position_ids), "segment_ids": torch.from_numpy(segment_ids),
    }


def padded_batch(
    samples: Sequence[tuple[np.ndarray, np.ndarray]], seq_len: int, pad_id: int, multiple: int = 8
) -> dict[str, torch.Tensor]:
    """One sample per row, right-padded to the longest (rounded up to `multiple`, at most
    `seq_len`): input_ids, labels (B, T).

    Right padding needs no mask: causal attention never lets a real token see a later pad.
    """
    longest = max(len(ids) - 1 for ids, _ in samples)
    t = max(longest, min(seq_len, -(-longest // multiple) * multiple))
    input_ids = np.full((len(samples), t), pad_id, dtype=np.int64)
    labels = np.full((len(samples), t), IGNORE_INDEX, dtype=np.int64)
    for r, (ids, trained) in enumerate(samples):
        n = len(ids) - 1
        input_ids[r, :n] = ids[:-1]
        labels[r, :n] = np.where(trained[1:], ids[1:], IGNORE_INDEX)
    return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels)}
