"""Reading a Hugging Face GPT-2, Llama or Qwen3 directory (OpenAI's upload, or one we exported).

Weights come from model.safetensors, a sharded model.safetensors.index.json, or the older
pytorch_model.bin[.index.json]; they are opened lazily (safetensors and torch both
memory-map), renamed and transposed into our layout one tensor at a time.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import torch

from gpt_dist.checkpoint import llama_adapter
from gpt_dist.checkpoint.layout import METADATA_FORMAT
from gpt_dist.checkpoint.lazy_tensor import LazyTensor
from gpt_dist.checkpoint.tokenizer_files import chat_template_of, tokenizer_spec_of
from gpt_dist.config import Config, ModelConfig
from gpt_dist.checkpoint.state_dict_adapter import (
    LM_HEAD,
    WTE,
    check_shapes,
    from_hf_tensor,
    is_conv1d_weight,
    model_config_from_hf,
    our_name,
)
from gpt_dist.errors import CheckpointError

CONFIG_FILE = "config.json"


def is_hf_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def read_hf_dir(
    hf_dir: str | Path, tokenizer_dir: Path | None = None
) -> tuple[ModelConfig, dict[str, LazyTensor], dict[str, Any]]:
    """(model config, weights in our naming and layout with vocab_size embedding rows, metadata).

    The metadata has gpt_dist.json's shape (step 0, config.model, tokenizer, chat_template)
    plus "source". Its tokenizer is GPT-2's when the directory's vocabulary is; another
    tokenizer is recorded only with `tokenizer_dir`, where its files are copied (hf_tokenizer).
    A model that is neither GPT-2 nor Llama, missing or damaged weight files, or weights that do not fit config.json
    raise CheckpointError naming the file.
    """
    hf_dir = Path(hf_dir)
    config_file = hf_dir / CONFIG_FILE
    try:
        conf = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{config_file}: missing; {hf_dir} is not a Hugging Face model directory") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_file}: not valid JSON ({e})") from None
    if conf.get("model_type") in ("llama", "qwen3"):
        cfg = llama_adapter.model_config_from_hf(conf, config_file)
        weights = llama_adapter.from_hf(cfg, _open_weights(hf_dir), config_file)
    else:
        cfg, weights = _gpt2_weights(conf, config_file, hf_dir)
    meta = {
        "format": METADATA_FORMAT,
        "step": 0,
        "tokens_seen": 0,
        "zero_stage": None,
        "world_size": None,
        "config": Config(model=cfg).to_dict(),
        "tokenizer": tokenizer_spec_of(hf_dir, tokenizer_dir),
        "chat_template": chat_template_of(hf_dir),
        "metrics": {},
        "source": {"kind": "huggingface", "path": str(hf_dir.resolve())},
    }
    return cfg, weights, meta


def _gpt2_weights(conf: dict[str, Any], config_file: Path, hf_dir: Path) -> tuple[ModelConfig, dict[str, LazyTensor]]:
    cfg = model_config_from_hf(conf, config_file)
    raw = _open_weights(hf_dir)  # HF name -> (shape, loader)
    weights: dict[str, LazyTensor] = {}
    for hf_name, (shape, load) in raw.items():
        name = our_name(hf_name)
        if name is None:
            continue
        if is_conv1d_weight(name):
            shape = shape[::-1]
        weights[name] = LazyTensor(shape, lambda name=name, load=load: from_hf_tensor(name, load()).float())
    head = weights.pop(LM_HEAD, None)
    check_shapes(
        {k: v.shape for k, v in weights.items()},
        cfg,
        where=str(config_file),
        fix=f"config.json and the weight files in {hf_dir} come from different models",
    )
    if not conf.get("tie_word_embeddings", True) and (
        head is None or not torch.equal(head.load(), weights[WTE].load())
    ):
        raise CheckpointError(
            f"{config_file}: tie_word_embeddings is false and lm_head.weight differs from the token embedding; "
            "GPT-2 ties them, so this model cannot be imported"
        )
    return cfg, weights


def _open_weights(hf_dir: Path) -> dict[str, tuple[tuple[int, ...], Any]]:
    index = next(
        (
            hf_dir / n
            for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json")
            if (hf_dir / n).is_file()
        ),
        None,
    )
    if index is not None:
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"{index}: not a valid shard index ({e!r}); save the model again with save_pretrained"
            ) from None
        files = sorted({hf_dir / f for f in weight_map.values()})
    else:
        single = [hf_dir / n for n in ("model.safetensors", "pytorch_model.bin") if (hf_dir / n).is_file()]
        if not single:
            raise CheckpointError(
                f"{hf_dir}: no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin); "
                "save the model with save_pretrained"
            )
        files = single[:1]
    out: dict[str, tuple[tuple[int, ...], Any]] = {}
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f}: missing, but {index.name} lists it; copy the whole model directory again")
        out.update(_open_safetensors(f) if f.suffix == ".safetensors" else _open_torch(f))
    return out


def _open_safetensors(path: Path) -> dict[str, tuple[tuple[int, ...], Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
        keys = list(handle.keys())
        shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in keys}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({e}); copy it again") from None

    def load(key: str) -> torch.Tensor:
        try:
            return handle.get_tensor(key)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: tensor {key} cannot be read ({e}); copy the file again") from None

    return {k: (shapes[k], lambda k=k: load(k)) for k in keys}


def _open_torch(path: Path) -> dict[str, tuple[tuple[int, ...], Any]]:
    try:
        # Files from before torch 1.6 (OpenAI's 2019 upload) are not zip archives and cannot be mapped.
        state = torch.load(path, map_location="cpu", mmap=zipfile.is_zipfile(path), weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, bad pickle, ...
        raise CheckpointError(f"{path}: cannot be read ({e}); copy it again") from None
    return {k: (tuple(t.shape), lambda t=t: t) for k, t in state.items() if isinstance(t, torch.Tensor)}
