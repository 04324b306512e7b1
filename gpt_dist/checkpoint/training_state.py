"""Saving and restoring training state around DeepSpeed's save/load_checkpoint.

A save is complete only once every rank has written and rank 0 has put the COMPLETE marker
(gpt_dist.checkpoint.layout): a process killed mid-save leaves a tag without it, which
resume passes over. Resuming on another data-parallel world size goes through DeepSpeed's
universal checkpoint format (ZeRO 1-3); ZeRO-0 checkpoints hold whole optimizer states and
load on any world size as they are.
"""

from __future__ import annotations

import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from gpt_dist.checkpoint.layout import (
    METADATA_FORMAT,
    complete_tags,
    latest_complete_tag,
    mark_complete,
    read_metadata,
    step_of_tag,
    tag_for_step,
    write_json_atomic,
)
from gpt_dist.config import Config, ModelConfig
from gpt_dist.engine.deepspeed_setup import restore_optimizer_invariants
from gpt_dist.engine.distributed import DistInfo, barrier
from gpt_dist.errors import CheckpointError

log = logging.getLogger(__name__)

UNIVERSAL_SUFFIX = "_universal"


@dataclass
class ResumePlan:
    tag: str
    metadata: dict[str, Any]
    universal: bool  # the world size changed: load through DeepSpeed's universal format


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def plan_resume(cfg: Config, dist: DistInfo) -> ResumePlan | None:
    """What `checkpoint.resume: auto` will load, decided before the engine is built."""
    if cfg.checkpoint.resume != "auto":
        return None
    ckpt_dir = Path(cfg.checkpoint_dir)
    tag = latest_complete_tag(ckpt_dir)
    if tag is None:
        return None
    meta = read_metadata(ckpt_dir / tag)
    if meta.get("zero_stage") != cfg.engine.zero_stage:
        raise CheckpointError(
            f"{ckpt_dir / tag}: written with ZeRO stage {meta.get('zero_stage')}, this run uses engine.zero_stage="
            f"{cfg.engine.zero_stage}; resume with the same stage (or start from it with checkpoint.init_from and resume: never)"
        )
    universal = meta.get("world_size") != dist.world_size and cfg.engine.zero_stage > 0
    return ResumePlan(tag=tag, metadata=meta, universal=universal)


def _ensure_universal(ckpt_dir: Path, tag: str, dist: DistInfo) -> str:
    """Convert `tag` to DeepSpeed's universal format once (rank 0); returns the universal tag."""
    out = ckpt_dir / f"{tag}{UNIVERSAL_SUFFIX}"
    if dist.is_main and not (out / "COMPLETE").is_file():
        from deepspeed.checkpoint import ds_to_universal

        tmp = ckpt_dir / f".{tag}{UNIVERSAL_SUFFIX}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        log.info("world size changed: converting %s to DeepSpeed's universal checkpoint format", tag)
        args = SimpleNamespace(
            input_folder=str(ckpt_dir / tag), output_folder=str(tmp), num_extract_workers=1, num_merge_workers=1,
            keep_temp_folder=False, strict=True, inject_missing_state=True,
        )
        ds_to_universal.main(args)
        for f in (ckpt_dir / tag).glob("mp_rank_*_model_states.pt"):
            if not (tmp / f.name).exists():
                shutil.copy2(f, tmp / f.name)
        tmp.rename(out)
        mark_complete(out)
    barrier()
    return out.name


def load_for_resume(engine, plan: ResumePlan, cfg: Config, dist: DistInfo) -> dict[str, Any]:
    """Load model, optimizer and our client state from `plan`; returns the client state."""
    ckpt_dir = Path(cfg.checkpoint_dir)
    tag = _ensure_universal(ckpt_dir, plan.tag, dist) if plan.universal else plan.tag
    path, client = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False)
    if path is None:
        raise CheckpointError(f"{ckpt_dir / tag}: DeepSpeed could not load this checkpoint")
    restore_optimizer_invariants(engine.optimizer, engine.module, cfg)
    state = (client or {}).get("gpt_dist") or plan.metadata["client_state"]
    rng_file = ckpt_dir / plan.tag / f"rng_rank{dist.rank:05d}.pt"
    if not plan.universal and rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return state


def save(engine, cfg: Config, dist: DistInfo, step: int, client_state: dict[str, Any], metadata: dict[str, Any]) -> Path:
    """Write a complete checkpoint for `step` and keep only the last `checkpoint.keep_last`."""
    ckpt_dir = Path(cfg.checkpoint_dir)
    tag = tag_for_step(step)
    tag_dir = ckpt_dir / tag
    if dist.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tag_dir.exists():  # a save of this step that was interrupted earlier
            shutil.rmtree(tag_dir)
    barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"gpt_dist": client_state})
    torch.save(rng_state(), tag_dir / f"rng_rank{dist.rank:05d}.pt")
    barrier()  # every rank has written its shards
    if dist.is_main:
        meta = dict(metadata, format=METADATA_FORMAT, step=step, client_state=client_state,
                    zero_stage=cfg.engine.zero_stage, world_size=dist.world_size)
        write_json_atomic(tag_dir / "gpt_dist.json", meta)
        mark_complete(tag_dir)
        prune(ckpt_dir, cfg.checkpoint.keep_last)
    barrier()
    return tag_dir


def prune(ckpt_dir: Path, keep_last: int) -> None:
    """Delete complete checkpoints beyond the newest `keep_last`, and interrupted saves older
    than the newest complete one (with their universal conversions)."""
    complete = complete_tags(ckpt_dir)
    keep = set(complete[-keep_last:])
    newest = step_of_tag(complete[-1]) if complete else -1
    for p in ckpt_dir.iterdir():
        name = p.name.removesuffix(UNIVERSAL_SUFFIX)
        if not p.is_dir() or not name.startswith("step_") or name in keep:
            continue
        try:
            step = step_of_tag(name)
        except CheckpointError:
            continue
        if name in complete or step < newest:
            shutil.rmtree(p, ignore_errors=True)


def load_frozen_weights(model: torch.nn.Module, plan: ResumePlan, cfg: Config) -> None:
    """Before a LoRA run resumes on another world size: copy its frozen weights from the tag into
    `model` (adapters already added). DeepSpeed's universal format carries only the parameters
    the optimizer holds, so without this the frozen base would keep its random initial values."""
    from gpt_dist.checkpoint.deepspeed_reader import read_raw_weights

    tag_dir = Path(cfg.checkpoint_dir) / plan.tag
    saved = read_raw_weights(tag_dir, plan.metadata)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                continue  # the universal load brings these, with their optimizer state
            if name == "lm_head.weight":
                continue  # tied to the token embedding
            if name not in saved or tuple(saved[name].shape) != tuple(p.shape):
                raise CheckpointError(
                    f"{tag_dir}: frozen weight {name} is missing or has another shape; this checkpoint does not come "
                    "from a run with the same model and lora settings"
                )
            p.copy_(saved[name].load())
