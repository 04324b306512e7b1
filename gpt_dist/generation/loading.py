"""A trained model ready to generate: weights, tokenizer and chat template from one directory
(a gpt_dist checkpoint or a Hugging Face GPT-2 directory, via gpt_dist.conversion)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpt_dist.errors import UserError
from gpt_dist.model.gpt import GPT

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class LoadedModel:
    model: GPT  # eval mode, on its device
    tokenizer: Any  # gpt_dist.data.tokenizer.Tokenizer
    chat_template: str | None  # Jinja source saved with the model, if it was fine-tuned with one
    metadata: dict[str, Any]


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible; use --device cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"--dtype {dtype}: use auto, fp32, bf16 or fp16")
    return _DTYPES[dtype]


def load_model(path: str | Path, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load `path` for generation. Raises CheckpointError / UserError naming what is missing."""
    from gpt_dist.conversion import load_weights, pad_vocab
    from gpt_dist.conversion.hf_tokenizer import load_our_tokenizer

    cfg, state, meta = load_weights(path)
    tokenizer = load_our_tokenizer(meta.get("tokenizer"), Path(path))
    dev = pick_device(device)
    # The training kernel choice may not exist here (e.g. flash_attn on a CPU); decoding with
    # a cache always passes a mask, which every kernel behind "auto" supports.
    cfg.attn_impl = "auto"
    cfg.activation_checkpointing = False
    model = GPT(cfg)
    model.load_state_dict(pad_vocab(state, cfg))
    model = model.to(device=dev, dtype=pick_dtype(dtype, dev)).eval()
    return LoadedModel(model, tokenizer, meta.get("chat_template"), meta)
