"""Learning-rate schedules: linear warmup, then cosine / linear / warmup-stable-decay / constant."""

from __future__ import annotations

import math

from gpt_dist.config import TrainConfig


def lr_at(step: int, total_steps: int, t: TrainConfig) -> float:
    """Learning rate for optimizer update `step` (0-based) of `total_steps`."""
    warmup = int(round(t.warmup_fraction * total_steps))
    if step < warmup:
        return t.lr * (step + 1) / warmup
    if t.schedule == "constant":
        return t.lr
    if t.schedule == "wsd":
        decay_steps = max(1, int(round(t.decay_fraction * total_steps)))
        decay_start = max(warmup, total_steps - decay_steps)
        if step < decay_start:
            return t.lr
        progress = min(1.0, (step - decay_start) / max(1, total_steps - decay_start))
        return t.lr - (t.lr - t.min_lr) * progress
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if t.schedule == "linear":
        return t.lr - (t.lr - t.min_lr) * progress
    return t.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (t.lr - t.min_lr)  # cosine
