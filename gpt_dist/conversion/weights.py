"""`load_weights`: one call for "give me the model in this folder", whatever wrote it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gpt_dist.checkpoint_layout import METADATA_FILE, read_metadata
from gpt_dist.config import ModelConfig
from gpt_dist.conversion.deepspeed_checkpoint import find_tag_dir, model_config_from_metadata, read_weights
from gpt_dist.conversion.hf_checkpoint import is_hf_dir, read_hf_dir
from gpt_dist.conversion.lazy_tensor import materialize, own_storage
from gpt_dist.conversion.state_dict_adapter import WTE


def load_weights(
    path: str | Path, tag: str | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a model from a gpt_dist checkpoint or a Hugging Face GPT-2 directory.

    `path`: a checkpoint dir (the latest complete tag, or `tag`), a tag folder
    (.../step_00000100), or a Hugging Face directory (config.json + weights).

    Returns (model config, state dict, metadata):
    - state dict: our parameter names, fp32 on the CPU, embedding with exactly
      `cfg.vocab_size` rows (no padding) and no lm_head.weight (tied to the embedding);
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
    state[WTE] = own_storage(state[WTE][: cfg.vocab_size])
    return cfg, state, meta
