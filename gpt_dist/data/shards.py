"""The on-disk format of a shard set: WebDataset `.tar` shards plus one `manifest.json`.

    DIR/train/                     one shard set per split
      manifest.json                written last; a shard set without one is incomplete
      train-t00000-00000.tar       task 0's first shard
      ...

Each sample is one tar member `<key>.tokens.npy`: a 1-D array of `seq_len + 1` token ids in the
manifest's dtype (uint16 when the vocabulary fits, else uint32), in .npy format, so any
WebDataset reader decodes it (`np.load(..., allow_pickle=False)`). Inputs are tokens[:-1] and
labels tokens[1:].

Because every member has the same name length and size, member i starts at byte i * stride: the
loader memory-maps a shard and views all its tokens as one (n, seq_len + 1) array without
parsing it member by member. `read_tokens` checks that layout (tar headers, .npy headers,
size, sha256) and falls back to a plain tar parse for shards re-packed by other tools.

Shards are written under a temporary name and renamed when closed, so a crash never leaves a
half-written shard under a real name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpt_dist.errors import DataError

MANIFEST = "manifest.json"
FORMAT = "gpt_dist.shards"
FORMAT_VERSION = 1
SAMPLE_EXT = "tokens.npy"
_BLOCK = 512


@dataclass
class ShardRecord:
    name: str
    sequences: int
    tokens: int  # sequences * (seq_len + 1): every stored token
    bytes: int
    sha256: str


@dataclass
class Manifest:
    split: str
    seq_len: int
    dtype: str
    tokenizer: dict[str, Any]
    shards: list[ShardRecord]
    sequences: int = 0
    tokens: int = 0
    # Per source: documents read / bad input by reason / kept after filters / after dedup / tokens.
    sources: dict[str, Any] = field(default_factory=dict)
    # Per filter step: documents in, kept, dropped by reason.
    filters: dict[str, Any] = field(default_factory=dict)
    bad_input: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format: str = FORMAT
    version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def write_manifest(split_dir: str | Path, manifest: Manifest) -> Path:
    """Write manifest.json atomically (temp file + rename): the shard set is complete after this."""
    split_dir = Path(split_dir)
    manifest.sequences = sum(s.sequences for s in manifest.shards)
    manifest.tokens = sum(s.tokens for s in manifest.shards)
    tmp = split_dir / f".{MANIFEST}.tmp"
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, split_dir / MANIFEST)
    return split_dir / MANIFEST


def read_manifest(split_dir: str | Path, *, key: str = "path") -> Manifest:
    """The manifest of a shard set; DataError naming `key` and the fix when it is missing or bad."""
    split_dir = Path(split_dir)
    f = split_dir / MANIFEST
    if not f.is_file():
        hint = ""
        if (split_dir / "train" / MANIFEST).is_file():
            hint = f"; it holds splits: use {split_dir / 'train'} (and {split_dir / 'val'} for validation)"
        elif split_dir.is_dir() and any(split_dir.glob("*.tar")):
            hint = "; its shards have no manifest (an interrupted `gpt-dist prepare`): re-run it to finish"
        elif not split_dir.exists():
            hint = "; no such directory"
        raise DataError(f"{key}: {split_dir} is not a shard set (no {MANIFEST}){hint}")
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
        if d.get("format") != FORMAT:
            raise ValueError(f"format is {d.get('format')!r}, expected {FORMAT!r}")
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"version {d.get('version')} is not supported (expected {FORMAT_VERSION})")
        d["shards"] = [ShardRecord(**s) for s in d["shards"]]
        m = Manifest(**d)
    except (ValueError, TypeError, KeyError) as e:
        raise DataError(f"{f}: not a valid gpt_dist manifest ({e}); rebuild it with `gpt-dist prepare`") from None
    if m.dtype not in ("uint16", "uint32"):
        raise DataError(f"{f}: dtype {m.dtype!r} is not uint16 or uint32; rebuild with `gpt-dist prepare`")
    return m


def npy_header(seq_len: int, dtype: str) -> bytes:
    """The .npy header of one sample: identical for every sample of a shard set."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (seq_len + 1,)}
    )
    return buf.getvalue()


def member_stride(seq_len: int, dtype: str) -> int:
    """Bytes from one sample's tar header to the next: header block + padded .npy payload."""
    payload = len(npy_header(seq_len, dtype)) + (seq_len + 1) * np.dtype(dtype).itemsize
    return _BLOCK + -(-payload // _BLOCK) * _BLOCK


class ShardWriter:
    """Writes (n, seq_len + 1) token windows into numbered shards of one split.

    `prefix` names this writer's shards (e.g. "train-t00003-"), so parallel tasks never collide.
    """

    def __init__(self, split_dir: str | Path, prefix: str, seq_len: int, dtype: str, sequences_per_shard: int):
        self.dir = Path(split_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.seq_len = seq_len
        self.dtype = np.dtype(dtype)
        self.per_shard = max(1, sequences_per_shard)
        self.header = npy_header(seq_len, dtype)
        self.records: list[ShardRecord] = []
        self._tar = None
        self._file = None
        self._n = 0

    def _open(self) -> None:
        import webdataset as wds

        self._name = f"{self.prefix}{len(self.records):05d}.tar"
        self._tmp = self.dir / f".{self._name}.tmp"
        self._file = open(self._tmp, "wb")
        # A fixed mtime keeps every tar header the same size (no PAX records) and shards reproducible.
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=0)
        self._n = 0

    def write(self, windows: np.ndarray) -> None:
        """Append samples; `windows` is (n, seq_len + 1) of ids that fit the dtype."""
        assert windows.ndim == 2 and windows.shape[1] == self.seq_len + 1, windows.shape
        windows = windows.astype(self.dtype, copy=False)
        for row in windows:
            if self._tar is None:
                self._open()
            key = f"{self._name[:-4]}_{self._n:07d}"
            self._tar.write({"__key__": key, SAMPLE_EXT: self.header + row.tobytes()})
            self._n += 1
            if self._n == self.per_shard:
                self._close_shard()

    def _close_shard(self) -> None:
        self._tar.close()
        self._file.close()
        digest = _sha256_file(self._tmp)
        os.replace(self._tmp, self.dir / self._name)
        size = (self.dir / self._name).stat().st_size
        self.records.append(ShardRecord(self._name, self._n, self._n * (self.seq_len + 1), size, digest))
        self._tar = self._file = None

    def close(self) -> list[ShardRecord]:
        if self._tar is not None:
            self._close_shard()
        return self.records


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def check_shard_file(path: Path, record: ShardRecord) -> str | None:
    """Cheap structural check (exists, size): the problem in words, or None when it looks whole."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != record.bytes:
        return f"{size} bytes where the manifest says {record.bytes} (truncated or replaced)"
    return None


def read_tokens(path: str | Path, record: ShardRecord, seq_len: int, dtype: str, *, verify: bool = True,
                vocab_size: int | None = None) -> np.ndarray:
    """All samples of one shard as a read-only (sequences, seq_len + 1) array.

    Memory-mapped when the shard has the fixed layout our writer produces (no copy; pages are
    shared by every process on the node), else parsed with tarfile. `verify` also checks the
    sha256 against the manifest; `vocab_size` (the tokenizer's, from the manifest) that every
    id is below it. Any problem raises DataError naming the shard.
    """
    path = Path(path)
    problem = check_shard_file(path, record)
    if problem:
        raise DataError(f"shard {path}: {problem}; restore it or rebuild the shard set with `gpt-dist prepare`")
    # A plain ndarray view of the mapping: np.memmap's own __getitem__ costs more per gather.
    mm = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
    if verify:
        digest = hashlib.sha256(mm).hexdigest()
        if digest != record.sha256:
            raise DataError(
                f"shard {path}: sha256 {digest[:16]}... does not match the manifest ({record.sha256[:16]}...): "
                f"the file is corrupt; restore it or rebuild with `gpt-dist prepare`"
            )
    tokens = _fixed_layout_view(mm, record.sequences, seq_len, dtype)
    if tokens is None:
        tokens = _parse_tar(path, record.sequences, seq_len, dtype)
    if vocab_size is not None and tokens.size and int(tokens.max()) >= vocab_size:
        # An id the embedding has no row for (an IndexError deep in the model), or one in the
        # padding rows past the vocabulary (an infinite loss that looks like a bad learning rate).
        row, col = (int(i[0]) for i in np.nonzero(tokens >= vocab_size))
        raise DataError(
            f"shard {path}: token id {int(tokens[row, col])} (sequence {row}, position {col}) is outside the "
            f"vocabulary of {vocab_size} tokens its manifest's tokenizer has; the shard was written with another "
            "tokenizer or is damaged; rebuild the shard set with `gpt-dist prepare`"
        )
    return tokens


def _fixed_layout_view(mm: np.ndarray, n: int, seq_len: int, dtype: str) -> np.ndarray | None:
    header = np.frombuffer(npy_header(seq_len, dtype), dtype=np.uint8)
    stride = member_stride(seq_len, dtype)
    payload = len(header) + (seq_len + 1) * np.dtype(dtype).itemsize
    if n == 0 or mm.size < n * stride + 2 * _BLOCK:
        return None
    rows = mm[: n * stride].reshape(n, stride)
    size_field = f"{payload:011o}".encode() + b"\x00"
    checks = (
        (rows[:, 257:262] == np.frombuffer(b"ustar", np.uint8)).all()
        and (rows[:, 156] == ord("0")).all()  # regular file
        and (rows[:, 124:136] == np.frombuffer(size_field, np.uint8)).all()
        and (rows[:, _BLOCK:_BLOCK + len(header)] == header).all()
        and not mm[n * stride:].any()  # end-of-archive blocks only: no further members
    )
    if not checks:
        return None
    start = _BLOCK + len(header)
    return rows[:, start:start + (seq_len + 1) * np.dtype(dtype).itemsize].view(np.dtype(dtype))


def _parse_tar(path: Path, n: int, seq_len: int, dtype: str) -> np.ndarray:
    out = np.empty((n, seq_len + 1), dtype=dtype)
    i = 0
    try:
        with tarfile.open(path, "r:") as tf:
            for member in tf:
                if not member.isfile() or not member.name.endswith("." + SAMPLE_EXT):
                    continue
                if i >= n:
                    raise DataError(f"shard {path}: more samples than the manifest's {n}; rebuild the manifest")
                arr = np.load(io.BytesIO(tf.extractfile(member).read()), allow_pickle=False)
                if arr.shape != (seq_len + 1,) or arr.dtype != np.dtype(dtype):
                    raise DataError(
                        f"shard {path}: sample {member.name} is {arr.dtype}{list(arr.shape)}, expected "
                        f"{dtype}[{seq_len + 1}]; the shard does not belong to this shard set"
                    )
                out[i] = arr
                i += 1
    except (tarfile.TarError, OSError, ValueError, EOFError) as e:
        raise DataError(f"shard {path}: unreadable tar ({e}); restore it or rebuild with `gpt-dist prepare`") from None
    if i != n:
        raise DataError(f"shard {path}: {i} samples where the manifest says {n} (truncated?); rebuild it")
    out.flags.writeable = False
    return out
