"""What the engine set-up applies around a plain GPT before DeepSpeed wraps it, in one place
(torchtitan's `parallelize` step): the attention kernel for the run's device and dtype,
activation checkpointing, torch.compile. The model's code knows none of it.

    model = build_model(cfg.model)
    parallelize(model, device, cfg.train.precision, compile=cfg.engine.compile)   # then deepspeed.initialize(...)

Parameter and buffer names do not change (the checkpoints, the Hugging Face conversion and
LoRA's state-dict names rely on them): checkpointing replaces a block's `forward` on the
instance and compile is `nn.Module.compile`, both of which keep the module tree as it was.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gpt_dist.model.gpt import GPT

log = logging.getLogger(__name__)

COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parallelize(model: nn.Module, device: torch.device, precision: str, *, compile: bool = False) -> nn.Module:
    """Set up `model` (a GPT, LoRA adapters or not) in place for training on `device` in
    `precision` (train.precision), activation checkpointing as its own model config asks and
    torch.compile with `compile` (engine.compile); returns it. Another module (the benchmarks'
    Hugging Face twin, which sets up its own attention and checkpointing) is returned as it is."""
    if not isinstance(model, GPT):
        return model
    model.set_attention_kernel(device, COMPUTE_DTYPES[precision])
    if model.config.activation_checkpointing:
        apply_activation_checkpointing(model, every=model.config.activation_checkpointing_every)
    if compile:
        apply_compile(model)
    return model


def apply_activation_checkpointing(model: GPT, every: int = 1) -> list[int]:
    """Recompute the activations of every `every`-th block in backward instead of keeping them
    (1: all blocks; 2: blocks 0, 2, 4, ...: half the recompute, about half the memory saved).
    Only in training steps: evaluation and KV-cache decoding run the blocks as they are.
    Returns the indices of the checkpointed blocks."""
    chosen = []
    for i, block in enumerate(model.transformer.h):
        if i % every == 0 and not isinstance(block.forward, functools.partial):
            # A partial over the block (not a closure) so that copy.deepcopy rebinds it to the copy.
            block.forward = functools.partial(_checkpointed_forward, block)
            chosen.append(i)
    log.info("activation checkpointing on blocks %s of %d", chosen, len(model.transformer.h))
    return chosen


def _checkpointed_forward(block: nn.Module, x, mask=None, kv_cache=None, layer=0, segments=None, rope=None):
    forward = type(block).forward  # GPT-2's Block or the llama family's
    if block.training and kv_cache is None and torch.is_grad_enabled():
        return checkpoint(forward, block, x, mask, kv_cache, layer, segments, rope, use_reentrant=False)
    return forward(block, x, mask, kv_cache, layer, segments, rope)


def apply_compile(model: GPT) -> None:
    """torch.compile each transformer block (torchtitan's granularity): the blocks are alike,
    so one compiled graph serves all of them, and the LM-head loss stays eager (its chunk loop
    is already a few large matmuls)."""
    for block in model.transformer.h:
        block.compile()
    log.info("torch.compile on %d transformer blocks", len(model.transformer.h))
