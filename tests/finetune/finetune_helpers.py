"""Shared pieces of the SFT / DPO tests: a small BPE tokenizer (so a tiny model's LM head is
cheap on a CPU), tiny-model configs, and reading a run's metrics."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from gpt_dist.config import Config, load_config

TOKENIZER_VOCAB = 512


def tiny_config(run_dir: Path, stage: str, tokenizer_dir: Path, train: list[Path], *, val: Path | None = None,
                steps: int = 10, lr: float = 3e-3, extra: list[str] = ()) -> Config:
    """A 2-layer, 64-wide model on 128-token rows, fp32, ZeRO-0, one process."""
    sources = ", ".join(f"{{path: {p}}}" for p in train)
    overrides = [
        f"stage={stage}", f"run_dir={run_dir}", "tokenizer.kind=bpe", f"tokenizer.path={tokenizer_dir}",
        "model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.block_size=128",
        f"model.vocab_size={TOKENIZER_VOCAB}", "model.vocab_pad_multiple=1", "model.attn_impl=sdpa",
        f"data.train=[{sources}]", "train.seq_len=128", "train.micro_batch_size=4", "train.global_batch_size=4",
        f"train.max_steps={steps}", f"train.lr={lr}", f"train.min_lr={lr / 10}", "train.warmup_fraction=0.05",
        "train.precision=fp32", "train.weight_decay=0.0", "engine.zero_stage=0", "checkpoint.every_steps=100000",
        "log.every_steps=1", "log.progress_bar=false", "eval.every_steps=100000", "eval.batches=2",
    ]
    if val is not None:
        overrides.append(f"data.val={val}")
    return load_config([], overrides + list(extra))


@contextlib.contextmanager
def one_thread():
    """Tiny models on a shared 2-core machine run far faster on one thread than on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train"]


def reply_of(record: dict) -> tuple[list[dict], str]:
    """(the conversation before the last reply, the last reply) of an SFT sample record."""
    from gpt_dist.finetune.sft_data import record_to_messages

    messages = record_to_messages(record)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]
