"""Saving and restoring training state around DeepSpeed's save/load_checkpoint.

A save is complete only once every rank has written and rank 0 has put the COMPLETE marker
(gpt_dist.checkpoint.layout): a process killed mid-save leaves a tag without it, which
resume passes over. Resuming on another data-parallel world size goes through DeepSpeed's
universal checkpoint format (ZeRO 1-3) for AdamW, and for Muon, whose momentum that format does
not know, through our own resharding (gpt_dist.checkpoint.full_state); ZeRO-0 checkpoints hold
whole optimizer states and load on any world size as they are.

Resume validates before any rank loads: each rank checks the newest complete tag (every file
its manifest lists, of its size and fingerprint; the files DeepSpeed will read, readable
weights-only; the model shape against this config) and, with `checkpoint.resume: auto`,
falls back to the newest tag that validates. Every rank reads the same files and reaches the
same verdict, so a damaged tag is one clear error (or the same fall-back) everywhere, before
any collective that a failing rank would leave hanging.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from gpt_dist.checkpoint.deepspeed_reader import check_readable, expected_files, model_config_from_metadata
from gpt_dist.checkpoint.layout import (
    METADATA_FILE,
    METADATA_FORMAT,
    complete_tags,
    mark_complete,
    read_metadata,
    step_of_tag,
    tag_for_step,
    write_json_atomic,
)
from gpt_dist.checkpoint.manifest import verify_tag, write_manifest
from gpt_dist.checkpoint.safe_load import load_file, refusal, refused_error, weights_only_loads
from gpt_dist.config import Config
from gpt_dist.engine.deepspeed_setup import restore_optimizer_invariants
from gpt_dist.engine.distributed import DistInfo, barrier
from gpt_dist.errors import CheckpointError, UserError

log = logging.getLogger(__name__)

UNIVERSAL_SUFFIX = "_universal"


@dataclass
class ResumePlan:
    tag: str
    metadata: dict[str, Any]
    universal: bool  # the world size changed: load through DeepSpeed's universal format
    reshard: bool = False  # the world size changed under Muon: load through gpt_dist.checkpoint.full_state

    @property
    def world_changed(self) -> bool:
        return self.universal or self.reshard


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


_SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "vocab_size", "block_size")


def plan_resume(cfg: Config, dist: DistInfo) -> ResumePlan | None:
    """What `checkpoint.resume: auto` will load, decided before the engine is built: the newest
    complete tag that validates (see the module docstring), or None to start fresh.

    A checkpoint of another model or ZeRO stage is an error (no fall-back: every tag of the run
    dir is); damaged tags are passed over, saying so; none left that validates is an error."""
    if cfg.checkpoint.resume != "auto":
        return None
    ckpt_dir = Path(cfg.checkpoint_dir)
    damaged: list[str] = []
    for tag in reversed(complete_tags(ckpt_dir)):
        tag_dir = ckpt_dir / tag
        try:
            meta = read_metadata(tag_dir)
            _check_same_run(tag_dir, meta, cfg)
            validate_tag(tag_dir, meta)
        except _OtherRunError as e:
            raise CheckpointError(str(e)) from None
        except CheckpointError as e:
            damaged.append(f"{tag}: {e}")
            continue
        if damaged and dist.is_main:
            log.warning("checkpoint.resume=auto: passing over damaged checkpoints (%s); resuming from %s, the newest "
                        "tag that validates", "; ".join(damaged), tag)
        changed = meta.get("world_size") != dist.world_size and cfg.engine.zero_stage > 0
        # DeepSpeed's universal-checkpoint conversion knows Adam's states, not Muon's momentum.
        muon = cfg.train.optimizer == "muon"
        return ResumePlan(tag=tag, metadata=meta, universal=changed and not muon, reshard=changed and muon)
    if damaged:
        raise CheckpointError(
            f"{ckpt_dir}: no complete checkpoint validates ({'; '.join(damaged)}); restore the files, or start over "
            "with a new run_dir (or checkpoint.resume: never)"
        )
    return None


def check_schedule(plan: ResumePlan | None, cfg: Config) -> list[str]:
    """The schedule changes between the run `plan` resumes and `cfg` ('key A (now B)' phrases;
    empty when starting fresh): max_steps, max_tokens or the global batch (in the objective's
    units: sequences, or pairs for DPO). Any of them moves the learning-rate schedule mid-run, so a change is a
    UserError unless checkpoint.allow_schedule_change is set, when the caller logs it."""
    if plan is None:
        return []
    changes = _schedule_changes(plan.metadata.get("config") or {}, cfg)
    if changes and not cfg.checkpoint.allow_schedule_change:
        raise UserError(
            f"{cfg.checkpoint_dir}/{plan.tag}: the run was started with {'; '.join(changes)}, which "
            "would change the learning-rate schedule mid-run; restore the old values, or set "
            "checkpoint.allow_schedule_change: true to continue on the new schedule, or start a new run_dir "
            "with checkpoint.init_from"
        )
    return changes


def _batch_units(train: dict[str, Any], seq_len: int) -> int | None:
    if train.get("global_batch_size"):
        return int(train["global_batch_size"])
    return int(train["global_batch_tokens"]) // seq_len if train.get("global_batch_tokens") else None


def _schedule_changes(saved: dict[str, Any], cfg: Config) -> list[str]:
    """What differs between the saved run's schedule and `cfg`'s, as 'key A (now B)' phrases."""
    old = saved.get("train") or {}
    if not old:
        return []
    now = dataclasses.asdict(cfg.train)
    changes = []
    for key in ("max_steps", "max_tokens") if old.get("max_steps") is None or now["max_steps"] is None else ("max_steps",):
        if old.get(key) != now[key]:
            changes.append(f"train.{key}={old.get(key)} (now {now[key]})")
    seq_len = old.get("seq_len") or (saved.get("model") or {}).get("block_size") or cfg.seq_len
    before, after = _batch_units(old, seq_len), _batch_units(now, cfg.seq_len)
    if before is not None and before != after:
        changes.append(f"a global batch of {before} sequences (now {after})")
    return changes


class _OtherRunError(CheckpointError):
    """The run dir holds checkpoints of another model or engine: no tag of it will do."""


def _check_same_run(tag_dir: Path, meta: dict[str, Any], cfg: Config) -> None:
    run_dir = tag_dir.parent
    if meta.get("zero_stage") != cfg.engine.zero_stage:
        raise _OtherRunError(
            f"{tag_dir}: written with ZeRO stage {meta.get('zero_stage')}, this run uses engine.zero_stage="
            f"{cfg.engine.zero_stage}; resume with the same stage (or start from it with checkpoint.init_from and resume: never)"
        )
    saved = model_config_from_metadata(meta, tag_dir / METADATA_FILE)
    diff = [f"{k} {getattr(saved, k)} vs {getattr(cfg.model, k)}" for k in _SHAPE_FIELDS
            if getattr(saved, k) != getattr(cfg.model, k)]
    saved_r = ((meta.get("config") or {}).get("lora") or {}).get("r", 0)
    if saved_r != cfg.lora.r:
        diff.append(f"lora.r {saved_r} vs {cfg.lora.r}")
    if diff:
        raise _OtherRunError(
            f"{run_dir} holds checkpoints of another model ({', '.join(diff)}; saved vs this config): use a new run_dir, "
            f"or checkpoint.init_from: {tag_dir} with checkpoint.resume: never to start from them"
        )


def validate_tag(tag_dir: Path, meta: dict[str, Any]) -> None:
    """Raise CheckpointError naming the file if `tag_dir` cannot be resumed from as it is:
    a file missing, truncated or from another save, or one that would run code when loaded."""
    verify_tag(tag_dir)
    stage, world = meta.get("zero_stage"), meta.get("world_size")
    if not isinstance(world, int) or world < 1:
        raise CheckpointError(f"{tag_dir / METADATA_FILE}: world_size is {world!r}, expected the number of ranks that saved")
    for f in expected_files(tag_dir, stage, world):
        check_readable(f, stage, world)
    for f in sorted(tag_dir.glob("*.pt")):
        load_file(f, mmap=True)  # weights-only: refuses a file that would run code; mapped, so cheap


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
        with weights_only_loads():
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
    if plan.reshard:
        return _load_resharded(engine, plan, cfg, dist)
    tag = _ensure_universal(ckpt_dir, plan.tag, dist) if plan.universal else plan.tag
    try:
        with weights_only_loads():
            path, client = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_optimizer_states=True,
                                                  load_lr_scheduler_states=False)
    except Exception as e:
        if refusal(e) is not None:
            raise refused_error(ckpt_dir / tag, refusal(e)) from None
        raise
    if path is None:
        raise CheckpointError(f"{ckpt_dir / tag}: DeepSpeed could not load this checkpoint")
    restore_optimizer_invariants(engine.optimizer, engine.module, cfg)
    state = (client or {}).get("gpt_dist") or plan.metadata["client_state"]
    rng_file = ckpt_dir / plan.tag / f"rng_rank{dist.rank:05d}.pt"
    if not plan.universal and rng_file.is_file():
        set_rng_state(load_file(rng_file))
    return state


def _load_resharded(engine, plan: ResumePlan, cfg: Config, dist: DistInfo) -> dict[str, Any]:
    """A Muon run saved on another world size: its full state, rebuilt per parameter from the
    saved shards (read weights-only, already validated by plan_resume) and put into `engine`."""
    from gpt_dist.checkpoint.full_state import load_full_state, read_full_state

    tag_dir = Path(cfg.checkpoint_dir) / plan.tag
    if dist.is_main:
        log.info("world size changed (%s -> %d ranks): resharding %s's fp32 weights, AdamW and Muon state",
                 plan.metadata.get("world_size"), dist.world_size, plan.tag)
    load_full_state(engine, read_full_state(tag_dir, plan.metadata), tag_dir)
    restore_optimizer_invariants(engine.optimizer, engine.module, cfg)
    return plan.metadata["client_state"]


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
    try:
        engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"gpt_dist": client_state})
        torch.save(rng_state(), tag_dir / f"rng_rank{dist.rank:05d}.pt")
    except (OSError, RuntimeError) as e:
        raise _save_failed(tag_dir, e) from None
    barrier()  # every rank has written its shards
    if dist.is_main:
        meta = dict(metadata, format=METADATA_FORMAT, step=step, client_state=client_state,
                    zero_stage=cfg.engine.zero_stage, world_size=dist.world_size)
        try:
            write_json_atomic(tag_dir / METADATA_FILE, meta)
            write_manifest(tag_dir)
        except OSError as e:
            raise _save_failed(tag_dir, e) from None
        prune(ckpt_dir, cfg.checkpoint.keep_last)
    barrier()
    return tag_dir


_NEARLY_FULL = 64 << 20  # bytes; less free than this after a failed write: the disk is full


def _save_failed(tag_dir: Path, e: BaseException) -> CheckpointError:
    """What a failed save means for the user. torch reports a full disk as "basic_ios::clear:
    iostream error" or "unexpected pos", without ENOSPC, so the free space decides."""
    ckpt_dir = tag_dir.parent
    free = shutil.disk_usage(ckpt_dir).free
    full = getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e) or free < _NEARLY_FULL
    kept = complete_tags(ckpt_dir)
    what = (f"the disk at {ckpt_dir} is full ({free / 2**20:.1f} MiB free)" if full
            else f"writing its files failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    keep = (f"the last complete checkpoint, {ckpt_dir / kept[-1]}, is kept" if kept
            else "there is no complete checkpoint yet")
    return CheckpointError(
        f"saving {tag_dir} failed: {what}; {keep} (resume passes over the incomplete {tag_dir.name}). Free space "
        "there or move checkpoint.dir to a larger disk, then run the same command again to resume"
    )


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
    `model` (adapters already added). DeepSpeed's universal format and our resharding
    (full_state) carry only the parameters the optimizer holds, so without this the frozen base
    would keep its random initial values."""
    from gpt_dist.checkpoint.deepspeed_reader import read_raw_weights

    tag_dir = Path(cfg.checkpoint_dir) / plan.tag
    saved = read_raw_weights(tag_dir, plan.metadata)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                continue  # the universal load (or full_state) brings these, with their optimizer state
            if name == "lm_head.weight":
                continue  # tied to the token embedding
            if name not in saved or tuple(saved[name].shape) != tuple(p.shape):
                raise CheckpointError(
                    f"{tag_dir}: frozen weight {name} is missing or has another shape; this checkpoint does not come "
                    "from a run with the same model and lora settings"
                )
            p.copy_(saved[name].load())
