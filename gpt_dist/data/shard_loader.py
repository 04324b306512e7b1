"""Training and validation loaders over shard sets, with exact, world-size-independent resume.

    loader = build_train_loader(cfg, rank, world_size)
    loader.load_state_dict(saved)            # optional, before iter()
    for batch in loader:                     # infinite; epochs roll over
        batch["input_ids"], batch["labels"]  # torch.int64 (B, T), labels = inputs shifted by one
        state = loader.state_dict()          # small JSON, identical on every rank

The sample order is global (gpt_dist.data.sample_order): rank r of W takes its B-sample slice of
each global round of W*B samples. DataLoader workers produce consecutive runs of rounds in turn
(worker w of K makes items w, w+K, ...), so the DataLoader's round-robin hands them back in
order. The state counts rounds already *yielded* to the caller (not those workers prefetched):
resuming from it reproduces exactly the batches an uninterrupted run would have produced next,
for any new world size or worker count.

Shards are memory-mapped and viewed as (n, seq_len + 1) arrays (gpt_dist.data.shards), so a
batch is a few numpy fancy-index gathers, with no per-sample Python work.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from gpt_dist.config import Config
from gpt_dist.data.sample_order import MixSchedule, SourceOrder
from gpt_dist.data.shards import Manifest, ShardRecord, check_shard_file, read_manifest, read_tokens
from gpt_dist.errors import DataError, UserError

log = logging.getLogger(__name__)

STATE_FORMAT = "gpt_dist.loader"
STATE_VERSION = 1


def check_tokenizer_matches(spec: dict[str, Any], tokenizer, *, where: str | None = None) -> None:
    """Raise DataError unless `tokenizer` (a gpt_dist Tokenizer) is the one `spec` describes.
    `where` names the shards (default: the sources a TrainLoader's spec lists)."""
    if spec.get("fingerprint") == tokenizer.fingerprint:
        return
    if where is None:
        sources = getattr(spec, "sources", None)
        where = f"the shards of {', '.join(sources)}" if sources else "the shards"
    made_with = f"{spec.get('kind')}{' at ' + spec['path'] if spec.get('path') else ''}"
    raise DataError(
        f"{where} were made with tokenizer {made_with} (fingerprint {str(spec.get('fingerprint'))[:12]}) but this "
        f"run's tokenizer is {tokenizer.describe()}; set tokenizer.kind / tokenizer.path to the one the shards "
        f"were made with ({spec.get('kind')}, {spec.get('path')}), or re-run `gpt-dist prepare` with this tokenizer"
    )


@dataclass
class ShardSet:
    """One source as the loader sees it: its manifest and the shards it will read."""

    path: str
    weight: float
    manifest: Manifest
    shards: list[ShardRecord]
    verified: bool  # every shard's sha256 already checked (skip_corrupt_shards)

    @property
    def counts(self) -> list[int]:
        return [s.sequences for s in self.shards]


def open_shard_set(path: str, weight: float, seq_len: int, skip_corrupt_shards: bool, key: str,
                   skipped: list[str]) -> ShardSet:
    """Read and check a shard set's manifest; with skip_corrupt_shards drop (and list) bad shards."""
    m = read_manifest(path, key=key)
    if m.seq_len != seq_len:
        raise DataError(
            f"{key}: {path} holds sequences of seq_len {m.seq_len} but this run uses {seq_len} "
            f"(train.seq_len, else model.block_size); set train.seq_len: {m.seq_len}, or re-run "
            f"`gpt-dist prepare --seq-len {seq_len}`"
        )
    shards = []
    for rec in m.shards:
        shard_path = Path(path) / rec.name
        problem = check_shard_file(shard_path, rec)
        if problem is None and skip_corrupt_shards:
            try:
                read_tokens(shard_path, rec, m.seq_len, m.dtype, verify=True, vocab_size=m.tokenizer.get("vocab_size"))
            except DataError as e:
                problem = str(e)
        if problem is None:
            shards.append(rec)
        elif skip_corrupt_shards:
            log.warning("skipping shard %s: %s", shard_path, problem)
            skipped.append(f"{shard_path}: {problem}")
        else:
            raise DataError(
                f"{key}: shard {shard_path}: {problem}; restore it, rebuild with `gpt-dist prepare`, or set "
                f"data.skip_corrupt_shards: true to train without it"
            )
    if not shards:
        raise DataError(f"{key}: {path}: no usable shards (all {len(m.shards)} are missing or corrupt)")
    return ShardSet(str(path), weight, m, shards, skip_corrupt_shards)


class SourcedSpec(dict):
    """A manifest's tokenizer spec (the same dict to every reader) that also knows the sources
    whose manifests gave it (`sources`), for check_tokenizer_matches to name them."""

    sources: list[str] = []


def _common_tokenizer(sets: list[ShardSet]) -> dict[str, Any]:
    """The tokenizer spec every source shares; its `sources` say where those shards are."""
    fps = {s.manifest.tokenizer.get("fingerprint") for s in sets}
    if len(fps) > 1:
        listing = "; ".join(f"{s.path}: {s.manifest.tokenizer.get('kind')} {str(s.manifest.tokenizer.get('fingerprint'))[:12]}"
                            for s in sets)
        raise DataError(
            f"data sources were made with different tokenizers ({listing}); re-run `gpt-dist prepare` for the "
            f"odd ones out with the same tokenizer"
        )
    spec = SourcedSpec(sets[0].manifest.tokenizer)
    spec.sources = [f"data.train[{i}] ({s.path})" for i, s in enumerate(sets)]
    return spec


class _ShardCache:
    """Open shards of one process, as (n, seq_len + 1) arrays; a few dozen kept open (LRU).
    A shard's checksum and token ids are checked the first time it is opened, not on reopening."""

    def __init__(self, sets: list[ShardSet], verify: bool, capacity: int = 64):
        self.sets = sets
        self.verify = verify
        self.capacity = capacity
        self._open: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._checked: set[tuple[int, int]] = set()

    def get(self, source: int, shard: int) -> np.ndarray:
        key = (source, shard)
        arr = self._open.get(key)
        if arr is None:
            s = self.sets[source]
            rec = s.shards[shard]
            first = key not in self._checked
            arr = read_tokens(Path(s.path) / rec.name, rec, s.manifest.seq_len, s.manifest.dtype,
                              verify=first and self.verify and not s.verified,
                              vocab_size=s.manifest.tokenizer.get("vocab_size") if first else None)
            self._checked.add(key)
            self._open[key] = arr
            while len(self._open) > self.capacity:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(key)
        return arr

    def gather(self, src: np.ndarray, shard: np.ndarray, local: np.ndarray, width: int) -> np.ndarray:
        """Rows (source, shard, local) as one (len, width) int64 array, in the given order."""
        # int32 holds any uint16/uint32 id a 2**31-token vocabulary has, at half the bytes of int64
        # to pass from worker processes.
        out = np.empty((src.size, width), dtype=np.int32)
        key = (src << 32) | shard
        for k in np.unique(key):
            sel = np.flatnonzero(key == k)
            out[sel] = self.get(int(k >> 32), int(k & 0xFFFFFFFF))[local[sel]]
        return out


def _to_batch(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, T + 1) token ids -> int64 inputs and labels (the same windows shifted by one), contiguous."""
    x = tokens.to(torch.int64)
    return {"input_ids": x[:, :-1].contiguous(), "labels": x[:, 1:].contiguous()}


@dataclass
class _WorkerError:
    """A DataError met in a DataLoader worker, re-raised by the main process as it is."""

    message: str


class _TrainStream(IterableDataset):
    """This rank's micro-batches from the start state on, `chunk` rounds per item.

    Item c holds rounds [c * chunk, (c + 1) * chunk) and is made by worker c % K, so the
    DataLoader's round-robin returns items in order. Several rounds per item keep the cost of
    passing tensors between processes small next to the data itself.
    """

    def __init__(self, sets: list[ShardSet], seed: int, window: int, batch: int, rank: int, world: int,
                 state: dict[str, Any], verify: bool, chunk: int):
        self.sets, self.seed, self.window = sets, seed, window
        self.batch, self.rank, self.world = batch, rank, world
        self.state = state
        self.verify = verify
        self.chunk = chunk

    def __iter__(self) -> Iterator[torch.Tensor | _WorkerError]:
        try:
            yield from self._items()
        except DataError as e:
            if get_worker_info() is None:
                raise
            # Handed to the main process as an item: raised in the worker, DataLoader would
            # wrap it in "Caught DataError in DataLoader worker process 0" and a traceback.
            yield _WorkerError(str(e))

    def _items(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        sched = MixSchedule([s.weight for s in self.sets], self.seed, self.state["samples"],
                            self.state["source_samples"])
        orders = [SourceOrder(s.counts, self.seed, i, self.window) for i, s in enumerate(self.sets)]
        cache = _ShardCache(self.sets, self.verify)
        width = self.sets[0].manifest.seq_len + 1
        mine = slice(self.rank * self.batch, (self.rank + 1) * self.batch)
        item = 0
        while True:
            rounds = [sched.take(self.world * self.batch) for _ in range(self.chunk)]
            if item % workers == worker:
                src = np.concatenate([r[0][mine] for r in rounds])
                k = np.concatenate([r[1][mine] for r in rounds])
                shard = np.empty_like(k)
                local = np.empty_like(k)
                for s in np.unique(src):
                    sel = np.flatnonzero(src == s)
                    shard[sel], local[sel] = orders[s].locate(k[sel])
                tokens = cache.gather(src, shard, local, width)
                yield torch.from_numpy(tokens.reshape(self.chunk, self.batch, width))
            item += 1


class TrainLoader:
    """Infinite micro-batches for one rank; `state_dict()` / `load_state_dict()` for exact resume."""

    def __init__(self, sources: Sequence[tuple[str, float]], *, seq_len: int, micro_batch_size: int, seed: int,
                 rank: int, world_size: int, shuffle_window: int = 8, num_workers: int = 1,
                 verify_checksums: bool = True, skip_corrupt_shards: bool = False):
        """sources: (shard set directory, weight) pairs; the other arguments are the data.* and
        train.* values of the same names (micro_batch_size sequences per rank)."""
        if not sources:
            raise UserError("data.train: no shard sets; list them, e.g. data.train: [{path: data/sample/train}]")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.skipped_shards: list[str] = []
        self.sets = [open_shard_set(path, weight, seq_len, skip_corrupt_shards, f"data.train[{i}].path",
                                    self.skipped_shards)
                     for i, (path, weight) in enumerate(sources)]
        self.tokenizer_spec = _common_tokenizer(self.sets)
        self.seq_len, self.batch, self.seed = seq_len, micro_batch_size, seed
        self.window, self.num_workers, self.verify = shuffle_window, num_workers, verify_checksums
        self.rank, self.world = rank, world_size
        self._schedule = MixSchedule([s.weight for s in self.sets], self.seed)

    # -- state

    def state_dict(self) -> dict[str, Any]:
        """Position after the batches yielded so far: global samples and per-source samples consumed."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "samples": int(self._schedule.position),
            "tokens": int(self._schedule.position) * self.seq_len,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "shuffle_window": self.window,
            "sources": [{"path": s.path, "weight": s.weight, "samples": int(n)}
                        for s, n in zip(self.sets, self._schedule.source_positions)],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` (from any world size / worker count); call before iter()."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise DataError(f"loader state: unknown format {state.get('format')!r} v{state.get('version')}; "
                            f"it was not written by this version of gpt_dist's loader")
        saved = {s["path"]: s["samples"] for s in state["sources"]}
        positions = [int(saved.get(s.path, 0)) for s in self.sets]
        same_stream = (
            [s["path"] for s in state["sources"]] == [s.path for s in self.sets]
            and [s["weight"] for s in state["sources"]] == [s.weight for s in self.sets]
            and state.get("seed") == self.seed
            and state.get("shuffle_window") == self.window
        )
        if not same_stream:
            log.warning(
                "data sources, weights, seed or shuffle window changed since this loader state was saved: each "
                "source continues from its saved position, but the mix is not the one the earlier run would "
                "have produced"
            )
        self._schedule = MixSchedule([s.weight for s in self.sets], self.seed, int(state["samples"]), positions)

    # -- iteration

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        start = {"samples": self._schedule.position, "source_samples": self._schedule.source_positions.copy()}
        # Up to 32 rounds or about 256k tokens per item passed from a worker; one when in-process.
        chunk = min(32, max(1, (1 << 18) // (self.batch * (self.seq_len + 1)))) if self.num_workers else 1
        stream = _TrainStream(self.sets, self.seed, self.window, self.batch, self.rank, self.world, start,
                              self.verify, chunk)
        # Its own generator: a DataLoader otherwise draws its base seed from the global torch RNG
        # on the first batch, which shifts dropout's random stream in a resumed run (the draw
        # falls after the restored RNG state there, at step 0 in the uninterrupted run).
        loader = DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                            prefetch_factor=2 if self.num_workers else None, persistent_workers=False,
                            generator=torch.Generator().manual_seed(self.seed))
        pin = torch.cuda.is_available()
        for item in loader:
            if isinstance(item, _WorkerError):
                raise DataError(item.message)
            for tokens in item:
                batch = _to_batch(tokens)
                if pin:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
                # Count the round before handing the batch over: a state_dict() taken now includes it.
                self._schedule.take(self.world * self.batch)
                yield batch


class ValLoader:
    """A fixed, finite set of validation micro-batches; the same batches on every pass.

    `batches` rounds of W*B samples, spread evenly over the validation shard set (not its first
    few documents); rank r takes its slice of each round. Every rank gets the same number of
    batches, as ZeRO-3 forward passes need all ranks.
    """

    def __init__(self, path: str | None, *, seq_len: int, micro_batch_size: int, max_batches: int, rank: int,
                 world_size: int, verify_checksums: bool = True, skip_corrupt_shards: bool = False):
        """path: the validation shard set (None: no validation); max_batches per rank."""
        self.batch = micro_batch_size
        self.rank, self.world = rank, world_size
        self.tokenizer_spec: dict[str, Any] | None = None
        self.skipped_shards: list[str] = []
        self.set: ShardSet | None = None
        self.n_batches = 0
        if path is None:
            return
        self.set = open_shard_set(path, 1.0, seq_len, skip_corrupt_shards, "data.val", self.skipped_shards)
        self.tokenizer_spec = self.set.manifest.tokenizer
        total = sum(self.set.counts)
        per_round = world_size * self.batch
        self.n_batches = min(max_batches, total // per_round)
        if self.n_batches == 0:
            raise DataError(
                f"data.val: {path} has {total} sequences, fewer than one round of {world_size} ranks x "
                f"micro_batch_size {self.batch}; build a larger validation split (gpt-dist prepare --val-fraction) "
                f"or lower train.micro_batch_size"
            )
        n = self.n_batches * per_round
        self._global = (np.arange(n, dtype=np.int64) * total) // n
        self._offsets = np.concatenate([[0], np.cumsum(self.set.counts)])
        self._verify = verify_checksums

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.set is None:
            return
        cache = _ShardCache([self.set], self._verify)
        per_round = self.world * self.batch
        width = self.set.manifest.seq_len + 1
        for i in range(self.n_batches):
            start = i * per_round + self.rank * self.batch
            idx = self._global[start:start + self.batch]
            shard = np.searchsorted(self._offsets, idx, side="right") - 1
            local = idx - self._offsets[shard]
            yield _to_batch(torch.from_numpy(cache.gather(np.zeros_like(idx), shard, local, width)))


def build_train_loader(cfg: Config, rank: int, world_size: int) -> TrainLoader:
    """The training loader of `rank` (0-based) among `world_size` data-parallel ranks, from a run config."""
    d = cfg.data
    return TrainLoader([(s.path, s.weight) for s in d.train], seq_len=cfg.seq_len,
                       micro_batch_size=cfg.train.micro_batch_size, seed=cfg.train.seed, rank=rank,
                       world_size=world_size, shuffle_window=d.shuffle_window, num_workers=d.num_workers,
                       verify_checksums=d.verify_checksums, skip_corrupt_shards=d.skip_corrupt_shards)


def build_val_loader(cfg: Config, rank: int, world_size: int) -> ValLoader:
    """At most cfg.eval.batches fixed micro-batches of cfg.data.val per rank (none when it is null)."""
    return ValLoader(cfg.data.val, seq_len=cfg.seq_len, micro_batch_size=cfg.train.micro_batch_size,
                     max_batches=cfg.eval.batches, rank=rank, world_size=world_size,
                     verify_checksums=cfg.data.verify_checksums, skip_corrupt_shards=cfg.data.skip_corrupt_shards)
