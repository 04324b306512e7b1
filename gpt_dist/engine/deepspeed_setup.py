"""The one place DeepSpeed is applied: config file + our config -> deepspeed.initialize.

Values our config owns (micro-batch, accumulation, precision, clipping, optimizer) are
written into the DeepSpeed config here and nowhere else; the JSON files in ds_configs/ keep
the ZeRO knobs a user may want to edit.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from gpt_dist.batch_geometry import BatchGeometry
from gpt_dist.config import Config, ConfigError, EngineConfig, TrainConfig

log = logging.getLogger(__name__)

REPO_DS_CONFIGS = Path(__file__).resolve().parents[2] / "ds_configs"
_OWNED = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
          "gradient_clipping", "bf16", "fp16", "optimizer", "scheduler")


def ds_config_path(engine: EngineConfig) -> Path:
    if engine.ds_config:
        p = Path(engine.ds_config)
        if not p.is_file() and (REPO_DS_CONFIGS / p.name).is_file() and not p.is_absolute():
            p = REPO_DS_CONFIGS / p.name
        if not p.is_file():
            raise ConfigError(f"engine.ds_config: {engine.ds_config} not found; point it at a JSON file such as ds_configs/zero3.json")
        return p
    return REPO_DS_CONFIGS / f"zero{engine.zero_stage}.json"


def build_ds_config(t: TrainConfig, engine: EngineConfig, geometry: BatchGeometry, *,
                    load_universal: bool = False) -> dict[str, Any]:
    """The DeepSpeed config dict for this run: the JSON file of `engine` with the values of
    `t` (train:) filled in, and the batch keys from `geometry` (gpt_dist.batch_geometry)."""
    path = ds_config_path(engine)
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    ds = {k: v for k, v in ds.items() if not k.startswith("_")}
    overridden = [k for k in _OWNED if k in ds]
    if overridden:
        log.warning("%s: %s are set from the gpt_dist config; the file's values are ignored", path, ", ".join(overridden))
    zero = ds.setdefault("zero_optimization", {})
    file_stage = zero.get("stage", engine.zero_stage)
    if engine.ds_config and file_stage != engine.zero_stage:
        raise ConfigError(
            f"engine.zero_stage={engine.zero_stage} but {path} sets zero_optimization.stage={file_stage}; make them agree"
        )
    zero["stage"] = engine.zero_stage
    ds.update(**geometry.deepspeed(), gradient_clipping=t.grad_clip)
    ds.pop("bf16", None)
    ds.pop("fp16", None)
    if t.precision == "bf16":
        ds["bf16"] = {"enabled": True}
    elif t.precision == "fp16":
        ds["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000,
                      "hysteresis": 2, "min_loss_scale": 1}
    if t.optimizer == "muon":
        if offloads_optimizer(ds):
            raise ConfigError(f"train.optimizer: muon cannot run with {path}'s offload_optimizer (DeepSpeed's CPU "
                              "optimizer is Adam only); use train.optimizer: adamw or a config without offload")
        # DeepSpeed's ZeRO-3 cannot orthogonalise partitions it reduce-scatters.
        zero["reduce_scatter"] = False
    if offloads_optimizer(ds):
        # DeepSpeed's CPU Adam runs the update on the host; it reads its settings from here.
        ds["optimizer"] = {"type": "AdamW", "params": {"lr": t.lr, "betas": [t.beta1, t.beta2], "eps": t.eps,
                                                       "weight_decay": t.weight_decay}}
    else:
        ds.pop("optimizer", None)
    ds.pop("scheduler", None)  # the learning rate is set by the training loop every step
    if load_universal:
        ds.setdefault("checkpoint", {})["load_universal"] = True
    return ds


def offloads_optimizer(ds: dict[str, Any]) -> bool:
    off = ds.get("zero_optimization", {}).get("offload_optimizer") or {}
    return off.get("device", "none") not in ("none", None)


def param_groups(model: torch.nn.Module, weight_decay: float, muon: TrainConfig | None = None) -> list[dict[str, Any]]:
    """Weight decay on matrices (linear weights, embeddings); none on biases and LayerNorms.
    Frozen parameters (LoRA's base weights) are left out, and so is a group with nothing in it
    (with LoRA every trainable tensor is a matrix).

    With `muon` (train.optimizer: muon) the blocks' 2-D weights form a third group for Muon,
    `lr_scale` = muon_lr / lr (the training loop sets each group's lr to schedule x lr_scale);
    each parameter is tagged `use_muon`, which DeepSpeed's ZeRO stages read to orthogonalise
    its partitions."""
    decay, no_decay, hidden = [], [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            # ZeRO-3 leaves a flat placeholder in the module; ds_shape is the parameter's shape.
            matrix = len(getattr(p, "ds_shape", p.shape)) >= 2
            in_block = ".h." in f".{name}"  # transformer.h.N...: not the embedding or the head
            if muon is not None:
                p.use_muon = matrix and in_block
            (hidden if muon is not None and matrix and in_block else decay if matrix else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if muon is not None:
        for g in groups:
            g.update(use_muon=False, lr_scale=1.0)
        groups.append({"params": hidden, "weight_decay": weight_decay, "use_muon": True,
                       "lr_scale": muon.muon_lr / muon.lr, "momentum": muon.muon_momentum})
    return [g for g in groups if g["params"]]


def _groups_for(model: torch.nn.Module, t: TrainConfig) -> list[dict[str, Any]]:
    return param_groups(model, t.weight_decay, t if t.optimizer == "muon" else None)


def restore_optimizer_invariants(optimizer, model: torch.nn.Module, cfg: Config) -> None:
    """Undo two side effects of DeepSpeed's universal-checkpoint load (used when the world size
    changes): it copies the first parameter group's hyperparameters into every group, which
    would put weight decay on biases and LayerNorms (and AdamW's settings on Muon's group), and
    it gives every ZeRO-3 sub-group the same `step` tensor, which AdamW then increments once per
    sub-group per iteration, skewing its bias correction. Harmless after an ordinary load."""
    groups = optimizer.param_groups
    expected = _groups_for(model, cfg.train)
    if len(groups) != len(expected):
        raise RuntimeError(f"expected {len(expected)} optimizer parameter groups (decay, no decay), found {len(groups)}")
    for group, built in zip(groups, expected):
        group.update({k: v for k, v in built.items() if k != "params"})
        if not built.get("use_muon"):
            group["betas"] = (cfg.train.beta1, cfg.train.beta2)
            group["eps"] = cfg.train.eps
    inner = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer inside a ZeRO wrapper
    for state in inner.state.values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].clone()


def build_optimizer(model: torch.nn.Module, t: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """train.optimizer over `model`'s trainable parameters (param_groups), with `t`'s settings."""
    if t.optimizer == "muon":
        # DeepSpeed's own Muon: ZeRO 1-3 recognise this class and orthogonalise the gradient
        # partitions of the use_muon parameters; its inline AdamW updates the rest.
        from deepspeed.runtime.zero.muon.muon_optimizer import MuonWithAuxAdam

        groups = _groups_for(model, t)
        for g in groups:
            g["lr"] = t.lr * g["lr_scale"]
            if not g["use_muon"]:
                g.update(betas=(t.beta1, t.beta2), eps=t.eps)
        return MuonWithAuxAdam(groups, adam_optimizer=None, adam_w_mode=True)
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, **extra)


def initialize(model: torch.nn.Module, t: TrainConfig, engine: EngineConfig, geometry: BatchGeometry,
               device: torch.device, *, load_universal: bool = False):
    """Wrap `model` in a DeepSpeed engine for training with `t` (train:) and `engine` (engine:),
    the batch split over ranks `geometry` (gpt_dist.batch_geometry); returns (engine, ds_config)."""
    import deepspeed

    from gpt_dist.engine.parallelize import parallelize

    ds = build_ds_config(t, engine, geometry, load_universal=load_universal)
    model = parallelize(model.to(device), device, t.precision, compile=engine.compile)
    if offloads_optimizer(ds):
        wrapped, _, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups(model, t.weight_decay), config=ds)
    else:
        optimizer = build_optimizer(model, t, device)
        wrapped, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds)
    _report_fp32_grad_norm(wrapped)
    return wrapped, ds


def _report_fp32_grad_norm(engine) -> None:
    """fp32 without ZeRO: DeepSpeed clips the gradients itself but drops the norm it computed, so
    `get_global_grad_norm()` would be None there while every other configuration reports it.
    Keep the norm from the same clipping call (no extra pass over the gradients)."""
    if engine.fp16_enabled() or engine.bfloat16_enabled() or engine.zero_optimization():
        return
    from deepspeed.runtime.utils import clip_grad_norm_

    def clip_and_keep_norm() -> None:
        norm = clip_grad_norm_(parameters=engine.module.parameters(), max_norm=engine.gradient_clipping(), mpu=engine.mpu)
        engine._global_grad_norm = float(norm)

    engine.clip_fp32_gradients = clip_and_keep_norm
