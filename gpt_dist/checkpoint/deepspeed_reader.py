"""The weights inside a gpt_dist DeepSpeed checkpoint tag, for any ZeRO stage and world size.

Where DeepSpeed puts them (N = data-parallel ranks that saved; "bf16_" prefixes the
optimizer files of bf16 runs):

    ZeRO-0    mp_rank_00_model_states.pt["module"]: the whole model, in the training dtype
    ZeRO-1/2  same file, training dtype; the fp32 master weights are partitioned over
              [bf16_]zero_pp_rank_{0..N-1}_mp_rank_00_optim_states.pt
    ZeRO-3    zero_pp_rank_{r}_mp_rank_00_model_states.pt hold empty placeholders; the fp32
              partitions are in the N optimizer files

ZeRO-1/2/3 are read through DeepSpeed's own zero_to_fp32 in lazy mode: it memory-maps the
optimizer files, drops the Adam moments unread, and gathers one parameter at a time, so a
converter holds about the fp32 model once (mapped pages) plus the tensors it has produced.
ZeRO-0 has no fp32 copy besides the module: a bf16/fp16 ZeRO-0 run gives its 16-bit weights
cast to fp32.

A LoRA run (lora.r > 0) saves frozen base weights and adapters under peft's names
(`...c_attn.base_layer.weight`, `...c_attn.lora_A.default.weight`). Frozen weights have no
optimizer copy: ZeRO-3 keeps them in its model-states files (zero_to_fp32 reads them there),
ZeRO-1/2 in the module. `read_weights` merges the adapters (gpt_dist.model.lora.merge), so
every reader sees a plain GPT; `read_raw_weights` gives the names as saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import torch

from gpt_dist.checkpoint.layout import COMPLETE_MARKER, METADATA_FILE, resolve_tag, step_of_tag
from gpt_dist.checkpoint.lazy_tensor import LazyTensor, from_tensor
from gpt_dist.checkpoint.manifest import verify_tag
from gpt_dist.checkpoint.safe_load import load_file, refusal, refused_error, weights_only_loads
from gpt_dist.checkpoint.state_dict_adapter import LM_HEAD, check_shapes
from gpt_dist.config import ConfigError, ModelConfig, resolve_model_config
from gpt_dist.errors import CheckpointError
from gpt_dist.model import lora

log = logging.getLogger(__name__)

ZERO0_MODEL_FILE = "mp_rank_00_model_states.pt"


def find_tag_dir(path: str | Path, tag: str | None = None) -> Path:
    """The complete tag folder meant by `path` (a checkpoint dir or a tag folder) and `tag`
    (default: the latest complete one); a clear CheckpointError otherwise."""
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(
            f"{p}: no such directory; give a checkpoint dir (e.g. runs/NAME/ckpt) or a step_NNNNNNNN folder"
        )
    if tag is None and not _is_tag(p.name) and not any(c.is_dir() and _is_tag(c.name) for c in p.iterdir()):
        raise CheckpointError(
            f"{p}: neither a gpt_dist checkpoint (no step_NNNNNNNN/ folders) nor a Hugging Face model "
            "(no config.json); give a run's checkpoint dir (e.g. runs/NAME/ckpt) or a save_pretrained folder"
        )
    if tag is None and _is_tag(p.name) and not (p / METADATA_FILE).is_file():
        raise CheckpointError(
            f"{p}: incomplete checkpoint (no {METADATA_FILE}, so no {COMPLETE_MARKER} either): the save was "
            "interrupted; use an earlier tag"
        )
    ckpt_dir, tag = resolve_tag(p, tag)
    return ckpt_dir / tag


def _is_tag(name: str) -> bool:
    try:
        step_of_tag(name)
        return True
    except CheckpointError:
        return False


def model_config_from_metadata(meta: dict[str, Any], meta_file: Path) -> ModelConfig:
    """The ModelConfig recorded in gpt_dist.json (config.model), checked."""
    model = (meta.get("config") or {}).get("model") if isinstance(meta, dict) else None
    if not isinstance(model, dict):
        raise CheckpointError(f"{meta_file}: config.model is missing; this file was not written by a gpt_dist run")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    try:
        return resolve_model_config(ModelConfig(**{k: v for k, v in model.items() if k in known}))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{meta_file}: config.{e}") from None


def read_weights(tag_dir: Path, meta: dict[str, Any], cfg: ModelConfig) -> dict[str, LazyTensor]:
    """Every weight of the checkpoint in `tag_dir`, in our naming, checked against `cfg`.

    Embedding rows as saved (padded_vocab_size, usually); no lm_head.weight when tied; a LoRA
    run's adapters merged into the weights they adapt. Errors (missing or truncated files,
    weights that do not fit the config) name the file.
    """
    meta_file = tag_dir / METADATA_FILE
    weights = read_raw_weights(tag_dir, meta)
    if cfg.tie_embeddings:
        weights.pop(LM_HEAD, None)
    if lora.has_adapters(weights):
        weights = _merge_adapters(weights, meta, meta_file)
    check_shapes(
        {k: v.shape for k, v in weights.items()},
        cfg,
        where=f"{meta_file} config.model",
        fix="the metadata and the weights come from different runs; restore the tag's original gpt_dist.json",
    )
    return weights


def read_raw_weights(tag_dir: Path, meta: dict[str, Any]) -> dict[str, LazyTensor]:
    """The module's tensors as the run saved them (LoRA's base_layer / lora_A / lora_B names
    included), fp32 master copies where the optimizer has them. Errors name the file."""
    meta_file = tag_dir / METADATA_FILE
    stage, world = meta.get("zero_stage"), meta.get("world_size")
    if stage not in (0, 1, 2, 3):
        raise CheckpointError(f"{meta_file}: zero_stage is {stage!r}, expected 0-3; the metadata is damaged")
    if stage > 0 and (not isinstance(world, int) or world < 1):
        raise CheckpointError(f"{meta_file}: world_size is {world!r}, expected the number of ranks that saved")
    for f in expected_files(tag_dir, stage, world):
        check_readable(f, stage, world)
    verify_tag(tag_dir)

    if stage == 0:
        return _read_module(tag_dir / ZERO0_MODEL_FILE)
    weights = _read_zero_partitions(tag_dir, stage)
    if stage < 3:
        # Frozen weights (LoRA's base layers) have no fp32 master copy in the optimizer
        # files; ZeRO-1/2 keep them in the module, in the training dtype.
        module = _read_module(tag_dir / ZERO0_MODEL_FILE)
        weights.update({k: v for k, v in module.items() if k not in weights})
    return weights


def _merge_adapters(weights: dict[str, LazyTensor], meta: dict[str, Any], meta_file: Path) -> dict[str, LazyTensor]:
    """A LoRA run's base weights and adapters as plain merged weights, one layer at a time."""
    spec = (meta.get("config") or {}).get("lora") or {}
    if not isinstance(spec.get("r"), int) or spec["r"] <= 0 or not spec.get("alpha"):
        raise CheckpointError(
            f"{meta_file}: the weights carry LoRA adapters but config.lora ({spec or 'missing'}) gives no r > 0 and "
            "alpha to merge them with; restore the tag's original gpt_dist.json"
        )

    def combine(base: LazyTensor, a: LazyTensor, b: LazyTensor, factor: float) -> LazyTensor:
        return LazyTensor(base.shape, lambda: lora.merge_tensors(base.load(), a.load(), b.load(), factor))

    try:
        return lora.merge(weights, spec, combine)
    except KeyError as e:
        raise CheckpointError(f"{meta_file.parent}: LoRA tensor {e.args[0]} is missing; the checkpoint is damaged") from None


def expected_files(tag_dir: Path, stage: int, world: int | None) -> list[Path]:
    if stage == 0:
        return [tag_dir / ZERO0_MODEL_FILE]
    files = [tag_dir / ZERO0_MODEL_FILE] if stage < 3 else []
    bf16 = "bf16_" if any(tag_dir.glob("bf16_zero_pp_rank_*_optim_states.pt")) else ""  # a bf16 run's names
    for r in range(world):
        if stage == 3:
            files.append(tag_dir / f"zero_pp_rank_{r}_mp_rank_00_model_states.pt")
        files.append(tag_dir / f"{bf16}zero_pp_rank_{r}_mp_rank_00_optim_states.pt")
    return files


def check_readable(path: Path, stage: int, world: int | None) -> None:
    """A missing or truncated shard is caught here, naming the file, before DeepSpeed reads any."""
    saved_by = f"ZeRO-{stage}" + (f" on {world} ranks" if stage > 0 else "")
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing; gpt_dist.json says this tag was saved by {saved_by}, so the copy is incomplete; "
            "copy the whole tag folder again or pick another --tag"
        )
    with open(path, "rb") as fh:
        is_zip = fh.read(2) == b"PK"
    if not is_zip:  # torch's legacy (non-zip) format: torch.load reports damage itself
        return
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.header_offset + info.compress_size > size:
                    raise zipfile.BadZipFile(f"entry {info.filename} runs past the end of the file")
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            f"{path}: truncated or corrupt ({e}); the save was cut short or the copy is damaged; "
            "copy the tag folder again or pick another --tag"
        ) from None


def _read_module(path: Path) -> dict[str, LazyTensor]:
    state = load_file(path, mmap=True)
    module = state.get("module") if isinstance(state, dict) else None
    if not isinstance(module, dict) or not module:
        raise CheckpointError(f"{path}: has no 'module' weights; it is not a DeepSpeed ZeRO-0/1/2 model-states file")
    return {name: from_tensor(t) for name, t in module.items()}


def _read_zero_partitions(tag_dir: Path, stage: int) -> dict[str, LazyTensor]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    chatter = io.StringIO()  # zero_to_fp32 prints its progress; keep it for --verbose
    try:
        with contextlib.redirect_stdout(chatter), weights_only_loads():
            state = get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name, lazy_mode=True)
    except Exception as e:  # noqa: BLE001 - DeepSpeed raises ValueError/FileNotFoundError/RuntimeError
        if refusal(e) is not None:
            raise refused_error(tag_dir, refusal(e)) from None
        raise CheckpointError(
            f"{tag_dir}: DeepSpeed could not reassemble the ZeRO-{stage} weights ({e}); the shards do not form one "
            "checkpoint (files from different saves or world sizes?); copy the tag folder again or pick another --tag"
        ) from None
    finally:
        log.debug("zero_to_fp32: %s", chatter.getvalue().strip())
    out = {}
    for name, t in state.items():
        if isinstance(t, torch.Tensor):
            out[name] = from_tensor(t)
        else:  # deepspeed's GatheredTensor: concatenates this parameter's slices from every rank
            out[name] = LazyTensor(tuple(t.shape), t.contiguous)
    return out
