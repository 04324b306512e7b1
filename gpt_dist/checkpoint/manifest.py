"""Each tag's files, their sizes and fingerprints, written into COMPLETE at save time.

A fingerprint must tell a shard of this save from the same shard of another save (same name,
same size) without reading gigabytes. torch writes `.pt` files as zip archives whose central
directory holds a CRC-32 of every entry, computed over all of its bytes as it was written:
hashing the central directory (names, sizes, CRCs) is a fingerprint of the whole content that
reads only the file's tail. Other files (a legacy non-zip .pt) are hashed whole. gpt_dist.json is
not listed: it is our JSON, checked against the weights whenever it is read, and may be edited
(a tokenizer path, say).

    {"complete": true, "save_id": "...", "files": {"mp_rank_00_model_states.pt":
        {"size": 123456, "fingerprint": "sha256:..."}, ...}}

A tag written before manifests existed has only {"complete": true}; it is not verified.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

from gpt_dist.checkpoint.layout import COMPLETE_MARKER, METADATA_FILE, write_json_atomic
from gpt_dist.errors import CheckpointError


def fingerprint(path: Path) -> str:
    """A digest of `path`'s content: of its zip central directory (per-entry CRC-32s) when it
    is a zip archive, else of its bytes."""
    h = hashlib.sha256()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                h.update(f"{info.filename}\0{info.file_size}\0{info.CRC}\n".encode())
        return "zipcrc-sha256:" + h.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def write_manifest(tag_dir: str | Path) -> dict[str, Any]:
    """Write COMPLETE listing every weight, optimizer and RNG file now in `tag_dir` (call it
    last, once every rank has written). Returns what was written."""
    tag_dir = Path(tag_dir)
    files = {
        p.name: {"size": p.stat().st_size, "fingerprint": fingerprint(p)}
        for p in sorted(tag_dir.iterdir())
        if p.is_file() and p.name not in (COMPLETE_MARKER, METADATA_FILE) and not p.name.startswith(".")
    }
    manifest = {"complete": True, "save_id": uuid.uuid4().hex, "files": files}
    write_json_atomic(tag_dir / COMPLETE_MARKER, manifest)
    return manifest


def read_manifest(tag_dir: str | Path) -> dict[str, Any]:
    path = Path(tag_dir) / COMPLETE_MARKER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; the save of this tag did not finish, pick another tag") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt ({e}); the tag's manifest is damaged, pick another tag") from None
    if not isinstance(data, dict) or data.get("complete") is not True:
        raise CheckpointError(f"{path}: not a gpt_dist completion marker; pick another tag")
    return data


def verify_tag(tag_dir: str | Path) -> bool:
    """Check every file COMPLETE lists: present, of its recorded size, with its fingerprint.
    Returns False for a tag without a file list (written before manifests); raises
    CheckpointError naming the first file that differs."""
    tag_dir = Path(tag_dir)
    files = read_manifest(tag_dir).get("files")
    if not isinstance(files, dict):
        return False
    for name, rec in files.items():
        p = tag_dir / name
        if not p.is_file():
            raise CheckpointError(f"{p}: missing; this tag was saved with it; copy the whole tag folder again or pick another tag")
        size = p.stat().st_size
        if size != rec.get("size"):
            raise CheckpointError(
                f"{p}: {size} bytes, but {rec.get('size')} were saved; the file is truncated or was replaced; copy the "
                "tag folder again or pick another tag"
            )
        try:
            got = fingerprint(p)
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{p}: unreadable ({e}); copy the tag folder again or pick another tag") from None
        if got != rec.get("fingerprint"):
            raise CheckpointError(
                f"{p}: its content is not the one saved with this tag (fingerprint differs): it comes from another save "
                "or was modified; copy the tag folder again or pick another tag"
            )
    return True
