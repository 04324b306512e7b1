"""Hugging Face GPT-2 directory -> gpt_dist checkpoint (`gpt-dist convert from-hf`).

The result is shaped like a ZeRO-0 save of one rank, so everything that reads our
checkpoints (load_weights, checkpoint.init_from, to-hf) takes it:

    OUT_DIR/latest                            "step_00000000"
    OUT_DIR/step_00000000/
      mp_rank_00_model_states.pt              {"module": GPT state dict (embedding padded), ...}
      gpt_dist.json                           step 0, config.model from config.json, tokenizer
      tokenizer/                              the HF tokenizer files, for a non-GPT-2 tokenizer
      COMPLETE
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

import torch

from gpt_dist.checkpoint.deepspeed_reader import ZERO0_MODEL_FILE
from gpt_dist.checkpoint.hf_reader import read_hf_dir
from gpt_dist.checkpoint.layout import METADATA_FILE, tag_for_step, write_json_atomic
from gpt_dist.checkpoint.lazy_tensor import materialize
from gpt_dist.checkpoint.manifest import write_manifest
from gpt_dist.checkpoint.state_dict_adapter import LM_HEAD, pad_vocab
from gpt_dist.conversion.output_dir import check_output_dir, staged_output_dir

log = logging.getLogger(__name__)


def import_hf(hf_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the GPT-2 model in `hf_dir` as a gpt_dist checkpoint directory `out_dir`; returns
    the tag folder. Raises CheckpointError, leaving no `out_dir`, on any bad input."""
    out = check_output_dir(out_dir)
    hf_dir = Path(hf_dir)
    tag = tag_for_step(0)
    with staged_output_dir(out) as tmp:
        tag_dir = tmp / tag
        tag_dir.mkdir()
        # A tokenizer other than GPT-2's is copied into the checkpoint, so that it does not
        # depend on the source directory staying where it is.
        cfg, weights, meta = read_hf_dir(hf_dir, tokenizer_dir=tag_dir / "tokenizer")
        spec = meta.get("tokenizer")
        if spec and spec.get("kind") == "bpe":
            spec["path"] = str((out / tag / "tokenizer").resolve())
        module = pad_vocab(materialize(weights), cfg)
        del weights
        torch.save(
            {
                "module": module,
                "buffer_names": [],
                "optimizer": None,
                "param_shapes": None,
                "shared_params": {LM_HEAD: "transformer.wte.weight"} if cfg.tie_embeddings else {},
                "lr_scheduler": None,
                "skipped_steps": 0,
                "global_steps": 0,
                "global_samples": 0,
                "dp_world_size": 1,
                "mp_world_size": 1,
                "ds_version": _deepspeed_version(),
            },
            tag_dir / ZERO0_MODEL_FILE,
        )
        meta.update(zero_stage=0, world_size=1)
        write_json_atomic(tag_dir / METADATA_FILE, meta)
        write_manifest(tag_dir)
        (tmp / "latest").write_text(tag, encoding="utf-8")  # DeepSpeed's pointer to the newest tag
    log.info("wrote %s (%s, step 0) from %s", out / tag, "x".join(map(str, (cfg.n_layer, cfg.n_embd))), hf_dir)
    return out / tag


def _deepspeed_version() -> str | None:
    try:
        return importlib.metadata.version("deepspeed")
    except importlib.metadata.PackageNotFoundError:
        return None
