"""LoRA adapters on a GPT, through peft.

    model = GPT(cfg.model); load_init_weights(model, ...); model = add_lora(model, cfg.lora)

peft replaces each targeted `nn.Linear` by a layer that keeps the original as `base_layer`
(frozen) and adds `lora_A` (r x in) and `lora_B` (out x r, zero at the start, so the adapted
model begins exactly at the starting weights). The model stays a `GPT`: the training loop,
DeepSpeed and the checkpoints see an ordinary module whose only trainable tensors are the
adapters. Its state dict names are

    transformer.h.0.attn.c_attn.base_layer.weight / .base_layer.bias
    transformer.h.0.attn.c_attn.lora_A.default.weight / .lora_B.default.weight

and `merged_weight_names` / `merge` turn them back into plain GPT names and values,
W + (alpha / r) * B @ A, which is how peft itself merges (its `merge_and_unload`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from gpt_dist.config import LoraConfig

ADAPTER = "default"  # peft's adapter name; one adapter per model here
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?:lora_A|lora_B)\." + ADAPTER + r"\.weight$")
_BASE_KEY = re.compile(r"^(?P<module>.+)\.base_layer\.(?P<param>weight|bias)$")

T = TypeVar("T")


def add_lora(model: torch.nn.Module, cfg: LoraConfig) -> torch.nn.Module:
    """Put adapters on `cfg.target_modules` of `model` (in place) and freeze everything else."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    peft_cfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=list(cfg.target_modules), bias="none")
    model = inject_adapter_in_model(peft_cfg, model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        p.requires_grad_(f".lora_A.{ADAPTER}." in name or f".lora_B.{ADAPTER}." in name)
    return model


def scaling(lora: Mapping[str, Any]) -> float:
    """alpha / r: the factor on B @ A in the adapted layer's output."""
    return float(lora["alpha"]) / int(lora["r"])


def has_adapters(names: Any) -> bool:
    return any(_LORA_KEY.match(n) for n in names)


def merge(weights: Mapping[str, T], lora: Mapping[str, Any], combine: Callable[[T, T, T, float], T]) -> dict[str, T]:
    """Plain GPT names for an adapted state dict: each adapted layer's weight becomes
    `combine(base, A, B, alpha / r)`, its bias is renamed, everything else passes through.

    Works on any value type (tensors, lazy tensors) through `combine`, so a converter can merge
    one layer at a time. Raises KeyError naming a layer whose A or B is missing."""
    factor = scaling(lora)
    out: dict[str, T] = {}
    for name, value in weights.items():
        if _LORA_KEY.match(name):
            continue  # consumed with its base weight
        m = _BASE_KEY.match(name)
        if m is None:
            out[name] = value
            continue
        module, param = m["module"], m["param"]
        if param == "bias":
            out[f"{module}.bias"] = value
            continue
        a_key, b_key = f"{module}.lora_A.{ADAPTER}.weight", f"{module}.lora_B.{ADAPTER}.weight"
        for key in (a_key, b_key):
            if key not in weights:
                raise KeyError(key)
        out[f"{module}.weight"] = combine(value, weights[a_key], weights[b_key], factor)
    return out


def merge_tensors(base: torch.Tensor, a: torch.Tensor, b: torch.Tensor, factor: float) -> torch.Tensor:
    """W + factor * B @ A in fp32 (the Linear weight is out x in, A is r x in, B is out x r)."""
    return torch.addmm(base.float(), b.float(), a.float(), alpha=factor)


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
