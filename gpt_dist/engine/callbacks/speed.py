"""Throughput figures of each log row: tokens/s (real tokens, no padding), step time, MFU,
the share of time spent waiting for data, peak memory."""

from __future__ import annotations

import resource
import time

import torch

from gpt_dist.engine.callbacks.base import Callback


class SpeedMonitor(Callback):
    priority = 200  # counts each step before the log row is made, and fills the row before the callbacks that write or print it

    def __init__(self, flops_per_token: float, peak_flops: float | None):
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self._start = time.perf_counter()
        self._steps, self._tokens = 0, 0.0

    def on_train_start(self, trainer):
        self._start = time.perf_counter()
        trainer.data_wait = 0.0

    def on_step_end(self, trainer, outcome):
        self._steps += 1
        self._tokens += outcome.tokens

    def on_log(self, trainer, metrics):
        if trainer.dist.device.type == "cuda":
            torch.cuda.synchronize()  # at log steps only: the hot path never waits for the device
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        tokens_per_s = self._tokens / elapsed
        mfu = None
        if self.peak_flops:
            mfu = self.flops_per_token * tokens_per_s / (self.peak_flops * trainer.dist.world_size)
        metrics.update(tokens_per_s=tokens_per_s, step_ms=1000 * elapsed / max(self._steps, 1), mfu=mfu,
                       data_wait_frac=trainer.data_wait / elapsed, mem_gb=_memory_gb(trainer.dist.device))
        self._start, self._steps, self._tokens = time.perf_counter(), 0, 0.0
        trainer.data_wait = 0.0


def _memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
