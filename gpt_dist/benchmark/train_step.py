"""One training step (forward, backward, optimizer update) on a micro-batch, two ways.

`EagerStep` drives a bare module with torch AdamW, the optimizer the training engine builds
(same parameter groups and hyper-parameters, fused on CUDA), clipping gradients at
`train.grad_clip` as DeepSpeed does for the trainer. Precision:
  fp32  fp32 weights, fp32 compute
  bf16  torch.autocast to bf16 over fp32 weights (mixed precision, no loss scaling)
  fp16  torch.autocast to fp16 over fp32 weights with a dynamic GradScaler

`EngineStep` drives a DeepSpeed engine exactly as gpt_dist.engine.trainer does
(`loss = engine(x, y); engine.backward(loss); engine.step()`); its precision is DeepSpeed's
(bf16/fp16 weights with fp32 master weights in the optimizer).

Both take any module called as `module(idx, targets) -> mean loss`: our model of either family,
or Hugging Face's behind gpt_dist.benchmark.hf_reference.HFCausalLM, and the `train:` settings
(optimizer, clipping, precision) it trains with; the engine also its `engine:` settings and the
batch geometry.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from gpt_dist.batch_geometry import BatchGeometry
from gpt_dist.config import EngineConfig, TrainConfig
from gpt_dist.engine.deepspeed_setup import build_optimizer

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class EagerStep:
    def __init__(self, model: nn.Module, t: TrainConfig, device: torch.device):
        self.model = model.to(device).train()
        self.device = device
        self.optimizer = build_optimizer(self.model, t, device)
        self.grad_clip = t.grad_clip
        self.dtype = AUTOCAST_DTYPES.get(t.precision)
        self.scaler = torch.amp.GradScaler(device.type) if t.precision == "fp16" else None

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (B, T) int64 inputs and next-token targets. Returns the detached fp32 loss."""
        with self._autocast():
            loss = self.model(x, y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


class EngineStep:
    def __init__(self, model: nn.Module, t: TrainConfig, engine: EngineConfig, geometry: BatchGeometry,
                 device: torch.device):
        from gpt_dist.engine.deepspeed_setup import initialize

        self.engine, self.ds_config = initialize(model, t, engine, geometry, device)
        self.engine.train()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.engine(x, y)
        self.engine.backward(loss)
        self.engine.step()
        return loss.detach()
