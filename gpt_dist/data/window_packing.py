"""Tokenize documents, pack them into (seq_len + 1)-token windows, write the shards.

Documents are concatenated, each followed by the end-of-text token, and cut into windows of
seq_len + 1 tokens: no padding, and a document may span two windows (as in GPT-2 / nanoGPT).
Every task packs its own stream; what is left at the end of a task (fewer than seq_len + 1
tokens) is saved, and the finalize step packs the leftovers of all tasks together, so only the
very last remainder of each split is dropped.

Each document goes to the validation split when a seeded hash of its text falls below
`val_fraction`: the split does not depend on the number of tasks, and no document is in both.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from gpt_dist.config import TokenizerConfig
from gpt_dist.data.shards import ShardRecord, ShardWriter
from gpt_dist.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val")


class Packer:
    """Concatenates token lists (each followed by `eot_id`) and cuts full windows of `window` tokens."""

    def __init__(self, window: int, eot_id: int):
        self.window = window
        self.eot_id = eot_id
        self.pending = np.empty(0, dtype=np.uint32)

    def add(self, docs: list[list[int]]) -> np.ndarray:
        """Append documents; returns the windows completed so far, (n, window) uint32."""
        eot = [self.eot_id]
        total = sum(map(len, docs)) + len(docs)
        flat = np.fromiter(
            itertools.chain.from_iterable(itertools.chain.from_iterable(zip(docs, itertools.repeat(eot)))),
            dtype=np.uint32,
            count=total,
        )
        buf = np.concatenate([self.pending, flat]) if self.pending.size else flat
        n = buf.size // self.window
        self.pending = buf[n * self.window:].copy()
        return buf[: n * self.window].reshape(n, self.window)


def is_val(text: str, val_fraction: float, seed: int) -> bool:
    import xxhash

    return val_fraction > 0 and xxhash.xxh64_intdigest(text.encode("utf-8", "surrogatepass"), seed=seed) < val_fraction * 2**64


class TokenizePackWrite(PipelineStep):
    """The last step of the tokenize stage: documents in, shards (and a task report) out.

    Writes DIR/<split>/<split>-t<rank>-NNNNN.tar and WORK/tokenize/<rank>.json, the task report
    that the finalize step reads: shard records, leftover tokens, documents and tokens per source.
    """

    type = "🔢 - TOKENIZER"
    name = "tokenize + pack + write"

    def __init__(self, tokenizer: TokenizerConfig, output_dir: str, work_dir: str, seq_len: int, dtype: str,
                 sequences_per_shard: int, val_fraction: float, seed: int, batch_size: int = 256,
                 fingerprint: str | None = None):
        super().__init__()
        self.tokenizer_cfg = tokenizer
        # The tokenizer the run was planned with: a tokenizer changed on disk since must not mix in.
        self.fingerprint = fingerprint
        self.output_dir = output_dir
        self.work_dir = work_dir
        self.seq_len = seq_len
        self.dtype = dtype
        self.sequences_per_shard = sequences_per_shard
        self.val_fraction = val_fraction
        self.seed = seed
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from gpt_dist.data.tokenizer import load_tokenizer

        tok = load_tokenizer(self.tokenizer_cfg)
        if self.fingerprint is not None and tok.fingerprint != self.fingerprint:
            raise DataError(
                f"tokenize task {rank}: the tokenizer at {tok.path} is not the one this run was planned with "
                f"(fingerprint {tok.fingerprint[:12]}, planned {self.fingerprint[:12]}); it changed on disk since: "
                f"restore it, or start over with --overwrite"
            )
        tok.num_threads = 1  # the tasks are the parallelism
        if tok.kind == "sentencepiece":
            import sentencepiece as spm

            spm.set_random_generator_seed(self.seed + rank)  # reproducible subword sampling
        writers, packers = {}, {}
        for split in SPLITS:
            prefix = f"{split}-t{rank:05d}-"
            _remove_stale(Path(self.output_dir) / split, prefix)
            writers[split] = ShardWriter(Path(self.output_dir) / split, prefix, self.seq_len, self.dtype,
                                         self.sequences_per_shard)
            packers[split] = Packer(self.seq_len + 1, tok.eot_id)
        per_source: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: {s: {"documents": 0, "tokens": 0} for s in SPLITS})
        for batch in batched(data or [], self.batch_size):
            with self.track_time(unit="batch"):
                routed: dict[str, list] = {s: [] for s in SPLITS}
                for doc in batch:
                    routed["val" if is_val(doc.text, self.val_fraction, self.seed) else "train"].append(doc)
                for split, docs in routed.items():
                    if not docs:
                        continue
                    ids = tok.encode_batch([d.text for d in docs], sample=(split == "train"))
                    for d, t in zip(docs, ids):
                        acc = per_source[d.metadata.get("source", "?")][split]
                        acc["documents"] += 1
                        acc["tokens"] += len(t) + 1
                    self.stat_update(f"{split}_documents", value=len(docs))
                    self.stat_update(f"{split}_tokens", value=sum(map(len, ids)) + len(ids))
                    writers[split].write(packers[split].add(ids))
        report: dict[str, Any] = {"splits": {}, "sources": per_source}
        for split in SPLITS:
            records = writers[split].close()
            leftover = packers[split].pending
            left_path = None
            if leftover.size:
                left_path = f"leftover/{split}/{rank:05d}.npy"
                _save_npy(Path(self.work_dir) / left_path, leftover)
            report["splits"][split] = {"shards": [r.__dict__ for r in records], "leftover": left_path,
                                       "leftover_tokens": int(leftover.size)}
        _write_json(Path(self.work_dir) / "tokenize" / f"{rank:05d}.json", report)
        return
        yield  # a generator that yields nothing: this step ends the pipeline


def _remove_stale(split_dir: Path, prefix: str) -> None:
    """Delete this task's shards from an interrupted earlier attempt before writing new ones."""
    if split_dir.is_dir():
        for p in split_dir.iterdir():
            if p.name.startswith(prefix) or p.name.startswith("." + prefix):
                p.unlink()


def _save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_task_reports(work_dir: str | Path) -> list[dict[str, Any]]:
    d = Path(work_dir) / "tokenize"
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(d.glob("*.json"))]


def pack_leftovers(work_dir: str | Path, reports: Iterable[dict[str, Any]], split: str, output_dir: str | Path,
                   seq_len: int, dtype: str, sequences_per_shard: int) -> tuple[list[ShardRecord], int]:
    """Pack every task's leftover tokens (in task order) into `<split>-tail-NNNNN.tar` shards.

    Returns the new shard records and the number of tokens dropped at the very end.
    """
    parts = []
    for rep in reports:
        left = rep["splits"][split]["leftover"]
        if left:
            parts.append(np.load(Path(work_dir) / left, allow_pickle=False))
    prefix = f"{split}-tail-"
    _remove_stale(Path(output_dir) / split, prefix)
    if not parts:
        return [], 0
    buf = np.concatenate(parts)
    window = seq_len + 1
    n = buf.size // window
    writer = ShardWriter(Path(output_dir) / split, prefix, seq_len, dtype, sequences_per_shard)
    writer.write(buf[: n * window].reshape(n, window))
    return writer.close(), int(buf.size - n * window)
