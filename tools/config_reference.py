#!/usr/bin/env python
"""Write docs/config.md, the reference of every run-config key with its default, from the
dataclasses of gpt_dist/config.py (their fields, defaults, docstrings and the comments beside
each field), so the reference cannot drift from the code:

    python tools/config_reference.py            # rewrite docs/config.md
    python tools/config_reference.py --check    # exit 1 if docs/config.md is not current

Fields without a comment in config.py take their one-line meaning from MEANINGS below; a
MEANINGS entry for a key that no longer exists is an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpt_dist import config as config_module  # noqa: E402

OUT = REPO / "docs" / "config.md"

MEANINGS = {
    "stage": "which data, loss and starting point the run uses",
    "run_dir": "where metrics.jsonl, events.jsonl, loss_curve.png and (by default) ckpt/ go",
    "model.preset": "gpt2, gpt2-medium, gpt2-large, gpt2-xl, mini, tiny, or llama-124m, llama-350m, llama-774m, "
                    "llama-1.5b, llama-mini, llama-tiny (model.arch: llama); fills every shape field left null",
    "model.arch": "model family: gpt2 (learned positions, LayerNorm, GELU, biases, tied head) or llama (RMSNorm, "
                  "rotary positions, SwiGLU, grouped-query attention, no biases); null = the preset's, else gpt2",
    "model.n_layer": "transformer blocks",
    "model.n_head": "attention heads (n_embd must divide by it)",
    "model.n_embd": "model width",
    "model.block_size": "positions the model has (the longest sequence)",
    "model.vocab_size": "token ids the model has (at least the tokenizer's)",
    "model.attn_impl": "auto: the flash-attn package's kernel on a GPU when installed, else PyTorch SDPA",
    "model.activation_checkpointing": "recompute each block in backward, keeping only its input",
    "model.dropout": "dropout probability (0 for pre-training as GPT-2 sizes are trained today)",
    "tokenizer.kind": "gpt2 (tiktoken's BPE; the vocabulary ships with gpt_dist) or one from `gpt-dist train-tokenizer`",
    "data.train": "list of {path: SHARD_DIR or .jsonl, weight}: sources mixed by weight",
    "data.train[].path": "a shard directory from `gpt-dist prepare` (pretrain/cpt) or a jsonl file (sft/dpo)",
    "data.train[].weight": "share of the samples from this source",
    "data.val": "validation shard directory or jsonl file; null = no validation",
    "data.num_workers": "loader worker processes per rank (0 = in the training process)",
    "train.global_batch_tokens": "tokens per optimizer step over all ranks (micro-batch x seq_len x ranks x accumulation)",
    "train.micro_batch_size": "sequences per rank per forward pass",
    "train.max_tokens": "training length in tokens (the schedule spans it)",
    "train.lr": "peak learning rate (AdamW)",
    "train.min_lr": "learning rate at the end of the decay",
    "train.warmup_fraction": "share of the steps spent warming up linearly from 0",
    "train.schedule": "learning-rate schedule after the warm-up (wsd: warmup-stable-decay)",
    "train.weight_decay": "AdamW weight decay on matrices (linear weights, embeddings); none on biases and LayerNorms",
    "train.beta1": "AdamW beta1",
    "train.beta2": "AdamW beta2",
    "train.eps": "AdamW epsilon",
    "train.grad_clip": "clip the global gradient norm to this (0 = off)",
    "train.precision": "training precision (bf16/fp16: mixed, with fp32 master weights)",
    "train.seed": "seed of the initial weights and the data order",
    "engine.zero_stage": "DeepSpeed ZeRO stage 0-3",
    "engine.compile": "torch.compile the model",
    "checkpoint.every_steps": "save every N optimizer steps (and at the end)",
    "checkpoint.keep_last": "complete checkpoints kept",
    "checkpoint.resume": "auto: continue from the latest complete checkpoint; never: always start fresh",
    "checkpoint.init_from": "weights only (a gpt_dist checkpoint or Hugging Face GPT-2 dir), fresh optimizer and data",
    "log.every_steps": "metrics every N optimizer steps",
    "log.progress_bar": "rank 0's progress bar",
    "log.wandb.mode": "online needs an API key; offline writes under run_dir",
    "log.wandb.project": "wandb project",
    "log.wandb.name": "wandb run name (null: wandb picks one)",
    "eval.every_steps": "validation every N optimizer steps",
    "eval.batches": "validation micro-batches per rank",
    "lora.alpha": "LoRA scale numerator: the update is (alpha / r) * B @ A",
    "lora.dropout": "dropout on the adapters' input",
    "lora.target_modules": "linear layers to adapt",
}

# Keys whose value must be one of a fixed set: the sets config.py validates against.
CHOICES = {
    "stage": config_module.STAGES,
    "model.attn_impl": config_module.ATTN_IMPLS,
    "model.arch": config_module.ARCHS,
    "train.optimizer": config_module.OPTIMIZERS,
    "tokenizer.kind": config_module.TOKENIZER_KINDS,
    "train.precision": config_module.PRECISIONS,
    "train.schedule": config_module.SCHEDULES,
    "checkpoint.resume": config_module.RESUME_MODES,
    "log.wandb.mode": config_module.WANDB_MODES,
    "finetune.overlong": config_module.OVERLONG_POLICIES,
    "lora.target_modules": config_module.LORA_TARGETS,
}


def field_comments(cls: type) -> dict[str, str]:
    """name -> the comment lines right above a field and the comment at the end of its line."""
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"^\s+(\w+):.*?(?:#\s*(.*))?$", line)
        if match and not stripped.startswith(("def ", "@")):
            text = " ".join(pending + ([match.group(2)] if match.group(2) else []))
            if text:
                out[match.group(1)] = text
        pending = []
    return out


def type_name(t) -> str:
    origin = typing.get_origin(t)
    if origin is typing.Union:
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return f"{' | '.join(type_name(a) for a in args)} or null"
    if origin is list:
        return f"list of {type_name(typing.get_args(t)[0])}"
    return getattr(t, "__name__", str(t))


def default_text(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[]" if not value else "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, default, type, meaning) of every leaf field under `cls`, depth first."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out += rows(t, f"{key}.")
            continue
        meaning = comments.get(f.name) or MEANINGS.get(key, "")
        if key in CHOICES:
            meaning = f"{meaning} (one of: {', '.join(CHOICES[key])})" if meaning else f"one of: {', '.join(CHOICES[key])}"
        out.append((key, default_text(f), type_name(t), meaning))
        item = typing.get_args(t)[0] if typing.get_origin(t) is list else None
        if item is not None and dataclasses.is_dataclass(item):
            out += rows(item, f"{key}[].")
    return out


def render() -> str:
    cfg = config_module.Config
    table = rows(cfg)
    unknown = sorted((set(MEANINGS) | set(CHOICES)) - {r[0] for r in table})
    if unknown:
        raise SystemExit(f"tools/config_reference.py: MEANINGS names keys the config no longer has: {unknown}")
    sections: dict[str, list] = {}
    for r in table:
        sections.setdefault(r[0].split(".")[0] if "." in r[0] else "", []).append(r)
    lines = [
        "# Run config reference",
        "",
        "Every key of a `gpt-dist train` config with its default. Generated from the dataclasses of",
        "`gpt_dist/config.py` by `python tools/config_reference.py`; do not edit by hand (a test checks",
        "that this file is current). A YAML file sets any of them, nested (`train: {lr: 3.0e-4}`); several",
        "files compose, later ones winning, and `--set train.lr=3e-4` overrides come last. Unknown keys,",
        "wrong types and inconsistent values are errors that name the file, the key and the fix.",
    ]
    docs = {f.name: f.type for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(cfg)
    for section, items in sections.items():
        lines += ["", f"## `{section}`" if section else "## top level", ""]
        if section and dataclasses.is_dataclass(hints.get(section)) and docs.get(section):
            doc = inspect.getdoc(hints[section])
            if doc and not doc.startswith(hints[section].__name__ + "("):
                lines += [" ".join(doc.split()), ""]
        lines += ["| key | default | type | meaning |", "|---|---|---|---|"]
        for key, default, tname, meaning in items:
            lines.append(f"| `{key}` | `{default}` | {tname} | {meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/config.md differs from what it would write")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is not current: run `python tools/config_reference.py`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
