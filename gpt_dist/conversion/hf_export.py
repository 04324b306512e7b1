"""gpt_dist checkpoint -> Hugging Face GPT-2 or Llama directory (`gpt-dist convert to-hf`).

The directory holds config.json (GPT2LMHeadModel, or LlamaForCausalLM for model.arch: llama), model.safetensors (tied head stored once,
vocab padding sliced off), generation_config.json, the tokenizer with the same ids as ours,
the chat template if the run had one, and a README.md model card. It appears only when
complete (built in a temporary folder beside it, then renamed).

Memory: one weight is read, converted and streamed into model.safetensors at a time. Peak is
about the fp32 model once (the memory-mapped shards; ZeRO-1/2 also concatenate their partitions
inside DeepSpeed, about twice) plus one weight: under 2.5x the fp32 size whatever the stage.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from gpt_dist.checkpoint import llama_adapter
from gpt_dist.checkpoint.deepspeed_reader import find_tag_dir, model_config_from_metadata, read_weights
from gpt_dist.checkpoint.hf_reader import is_hf_dir
from gpt_dist.checkpoint.layout import METADATA_FILE, read_metadata
from gpt_dist.checkpoint.state_dict_adapter import hf_config, hf_shape, to_hf_tensor
from gpt_dist.checkpoint.tokenizer_files import load_our_tokenizer
from gpt_dist.conversion.hf_tokenizer import save_hf_tokenizer
from gpt_dist.conversion.model_card import model_card
from gpt_dist.conversion.output_dir import check_output_dir, staged_output_dir
from gpt_dist.conversion.safetensors_writer import write_safetensors
from gpt_dist.errors import CheckpointError

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def export_hf(ckpt_dir: str | Path, out_dir: str | Path, tag: str | None = None, dtype: str = "fp32") -> Path:
    """Write the checkpoint `tag` (default: the latest complete one) of `ckpt_dir` (or a tag
    folder) as a Hugging Face GPT-2 directory `out_dir`, weights in `dtype` (fp32/bf16/fp16).
    Returns `out_dir`. Raises CheckpointError, leaving no `out_dir`, on any bad input."""
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype '{dtype}': choose one of {', '.join(DTYPES)}")
    check_output_dir(out_dir)  # before the slow part
    src = Path(ckpt_dir)
    if tag is None and is_hf_dir(src) and not (src / METADATA_FILE).exists():
        raise CheckpointError(f"{src}: is a Hugging Face model already; to-hf converts gpt_dist checkpoints")
    tag_dir = find_tag_dir(src, tag)
    tag = tag_dir.name
    meta_file = tag_dir / METADATA_FILE
    meta = read_metadata(tag_dir)
    cfg = model_config_from_metadata(meta, meta_file)
    tok = load_our_tokenizer(meta.get("tokenizer"), meta_file)
    if tok.vocab_size > cfg.vocab_size:
        raise CheckpointError(
            f"{meta_file}: tokenizer has {tok.vocab_size} ids but config.model.vocab_size is {cfg.vocab_size}; "
            "the metadata names a different tokenizer from the one the model was trained with"
        )
    weights = read_weights(tag_dir, meta, cfg)
    torch_dtype = DTYPES[dtype]
    conf = (llama_adapter.hf_config if cfg.arch == "llama" else hf_config)(cfg, eot_id=tok.eot_id, dtype=torch_dtype)

    t0 = time.perf_counter()
    log.info("exporting %s (%d tensors) to %s as %s", tag_dir, len(weights), out_dir, dtype)
    with staged_output_dir(out_dir) as tmp:
        save_hf_tokenizer(tok, tmp, chat_template=meta.get("chat_template"), model_max_length=cfg.block_size)
        if cfg.arch == "llama":
            shapes = llama_adapter.hf_layout(cfg, {name: lt.shape for name, lt in weights.items()})
        else:
            shapes = {name: hf_shape(name, lt.shape, cfg) for name, lt in weights.items()}
        layout = {name: (shape, torch_dtype) for name, shape in shapes.items()}

        def converted():
            # One weight at a time: read (fp32), convert, cast, write, free. Popping each lazy
            # weight also lets go of the memory-mapped shards once the last one is read.
            for name in list(weights):
                tensor = weights.pop(name).load()
                if cfg.arch == "llama":  # one of ours is one or more of theirs
                    yield from ((n, t.to(torch_dtype)) for n, t in llama_adapter.to_hf_tensors(name, tensor, cfg))
                else:
                    yield name, to_hf_tensor(name, tensor, cfg).to(torch_dtype)

        # "format": "pt" tells transformers these are PyTorch tensors.
        write_safetensors(tmp / "model.safetensors", layout, converted(), metadata={"format": "pt"})
        conf.save_pretrained(str(tmp))
        _generation_config(tok.eot_id).save_pretrained(str(tmp))
        n_params = sum(math.prod(shape) for shape, _ in layout.values())
        card = model_card(Path(out_dir).name, cfg, n_params, meta, tag=tag, dtype=dtype, tokenizer=tok)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    log.info("wrote %s in %.1fs", out_dir, time.perf_counter() - t0)
    return Path(out_dir)


def _generation_config(eot_id: int):
    from transformers import GenerationConfig

    # As OpenAI's GPT-2: generation stops at end-of-text, which also begins a document.
    return GenerationConfig(bos_token_id=eot_id, eos_token_id=eot_id)
