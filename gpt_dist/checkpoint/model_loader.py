"""The one model loader: a gpt_dist checkpoint (any ZeRO stage, world size, LoRA merged) or a
Hugging Face GPT-2 directory -> our GPT, its tokenizer and its metadata. `init_from`, generate,
chat and eval all come through here.

    m = load_model("runs/sft/ckpt")                 # or a tag folder, or an HF directory
    m.model, m.tokenizer, m.chat_template, m.metadata

    cfg, state, meta = load_weights("runs/gpt2/ckpt")   # the state dict alone (conversion)
    GPT(cfg).load_state_dict(pad_vocab(state, cfg))
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gpt_dist.checkpoint.deepspeed_reader import find_tag_dir, model_config_from_metadata, read_weights
from gpt_dist.checkpoint.hf_reader import is_hf_dir, read_hf_dir
from gpt_dist.checkpoint.layout import METADATA_FILE, read_metadata
from gpt_dist.checkpoint.lazy_tensor import materialize, own_storage
from gpt_dist.checkpoint.state_dict_adapter import LM_HEAD, WTE, pad_vocab
from gpt_dist.checkpoint.tokenizer_files import load_our_tokenizer, tokenizer_spec_of
from gpt_dist.config import ModelConfig
from gpt_dist.errors import CheckpointError, UserError
from gpt_dist.model.factory import build_model
from gpt_dist.model.gpt import GPT

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_weights(
    path: str | Path, tag: str | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a model from a gpt_dist checkpoint or a Hugging Face GPT-2 directory.

    `path`: a checkpoint dir (the latest complete tag, or `tag`), a tag folder
    (.../step_00000100), or a Hugging Face directory (config.json + weights).

    Returns (model config, state dict, metadata):
    - state dict: our parameter names, fp32 on the CPU, embedding with exactly
      `cfg.vocab_size` rows (no padding) and no lm_head.weight when tied to the embedding;
      `pad_vocab(state, cfg)` gives what `GPT(cfg).load_state_dict` takes.
    - metadata: gpt_dist.json's contents (step, tokens_seen, config, tokenizer, chat_template,
      metrics, ...) plus "source" {kind: gpt_dist|huggingface, path}; for a Hugging Face
      directory step 0, the tokenizer when it is recognisable, and its chat template.
    Raises CheckpointError naming the file at fault.
    """
    p = Path(path)
    if tag is None and is_hf_dir(p) and not (p / METADATA_FILE).exists():
        cfg, weights, meta = read_hf_dir(p)
    else:
        tag_dir = find_tag_dir(p, tag)
        meta = read_metadata(tag_dir)
        cfg = model_config_from_metadata(meta, tag_dir / METADATA_FILE)
        weights = read_weights(tag_dir, meta, cfg)
        meta = dict(meta, source={"kind": "gpt_dist", "path": str(tag_dir.resolve())})
    state = materialize(weights)
    for name in (WTE, LM_HEAD) if not cfg.tie_embeddings else (WTE,):
        state[name] = own_storage(state[name][: cfg.vocab_size])
    return cfg, state, meta


@dataclass
class LoadedModel:
    model: GPT  # eval mode, on its device, in the asked dtype
    metadata: dict[str, Any]  # load_weights' metadata
    path: Path
    _tokenizer: Any = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """"gpt_dist" or "huggingface"."""
        return self.metadata.get("source", {}).get("kind", "gpt_dist")

    @property
    def chat_template(self) -> str | None:
        """Jinja source saved with the model, if it was fine-tuned with one."""
        return self.metadata.get("chat_template")

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (gpt_dist.data.tokenizer), read on first use: the spec in the
        checkpoint metadata (checked against its fingerprint), or for a Hugging Face directory
        the tokenizer files saved in it. A model without one loads; asking for it raises."""
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self) -> Any:
        spec = self.metadata.get("tokenizer")
        where = Path(self.metadata.get("source", {}).get("path", self.path))
        if spec is None and self.kind == "huggingface":
            # Not GPT-2's vocabulary: read its tokenizer.json as a byte-level BPE, in a scratch
            # copy (tokenizer_spec_of writes our settings file next to it).
            with tempfile.TemporaryDirectory(prefix="gpt_dist_tok_") as tmp:
                spec = tokenizer_spec_of(where, copy_to=Path(tmp))
                if spec is not None:
                    return load_our_tokenizer(spec, where / "tokenizer.json")
        if spec is None:
            raise UserError(
                f"{where}: no tokenizer recorded with this model (a training run records it in gpt_dist.json; a "
                "Hugging Face directory needs tokenizer.json)"
            )
        meta_file = where / METADATA_FILE if self.kind == "gpt_dist" else where / "tokenizer.json"
        return load_our_tokenizer(spec, meta_file)


def pick_device(device: str | torch.device) -> torch.device:
    """"auto" -> the GPU when one is visible, else the CPU; "cuda" without one is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible; use --device cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" -> bf16 on a GPU that has it, else fp32."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"--dtype {dtype}: use auto, fp32, bf16 or fp16")
    return _DTYPES[dtype]


def load_model(
    path: str | Path, device: str | torch.device = "auto", dtype: str = "auto", tag: str | None = None
) -> LoadedModel:
    """Read the model at `path` (see load_weights) into our GPT, in eval mode, on `device`.
    Raises CheckpointError / UserError naming what is missing."""
    cfg, state, meta = load_weights(path, tag=tag)
    dev = pick_device(device)
    # The training kernel choice may not exist here (e.g. flash_attn on a CPU); every kernel
    # behind "auto" takes the masks that decoding with a cache passes.
    cfg.attn_impl = "auto"
    cfg.dropout = 0.0
    cfg.activation_checkpointing = False
    model = build_model(cfg)
    model.load_state_dict(pad_vocab(state, cfg))
    model = model.to(device=dev, dtype=pick_dtype(dtype, dev)).eval()
    return LoadedModel(model=model, metadata=meta, path=Path(path))


def load_init_weights(model: torch.nn.Module, path: str, model_cfg: ModelConfig) -> dict[str, Any]:
    """Copy weights from a gpt_dist checkpoint or a Hugging Face GPT-2 directory into `model`
    (weights only: the optimizer and data position start fresh). Returns the source's metadata."""
    src_cfg, state, meta = load_weights(path)
    for key in ("n_layer", "n_head", "n_embd", "vocab_size"):
        if getattr(src_cfg, key) != getattr(model_cfg, key):
            raise CheckpointError(
                f"checkpoint.init_from={path}: model.{key} is {getattr(src_cfg, key)} there but {getattr(model_cfg, key)} "
                f"in this config; set model.{key}: {getattr(src_cfg, key)} (or model.preset to match)"
            )
    if model_cfg.block_size > src_cfg.block_size:
        raise CheckpointError(
            f"checkpoint.init_from={path}: it has {src_cfg.block_size} positions, this config asks for "
            f"model.block_size={model_cfg.block_size}; use block_size <= {src_cfg.block_size}"
        )
    own = model.state_dict()
    with torch.no_grad():
        for name, tensor in own.items():
            if name == "lm_head.weight":
                continue  # tied to the token embedding
            if name not in state:
                raise CheckpointError(f"checkpoint.init_from={path}: tensor {name} is missing")
            src = state[name]
            # embeddings may differ in padded rows (vocab) or in positions (shorter block_size)
            rows = min(src.shape[0], tensor.shape[0]) if src.dim() == 2 and name.endswith(("wte.weight", "wpe.weight")) else None
            if rows is not None:
                if name.endswith("wte.weight"):
                    tensor.zero_()  # vocab padding rows: never read, kept deterministic
                tensor[:rows].copy_(src[:rows])
            elif src.shape != tensor.shape:
                raise CheckpointError(f"checkpoint.init_from={path}: {name} has shape {tuple(src.shape)}, expected {tuple(tensor.shape)}")
            else:
                tensor.copy_(src)
    return meta
