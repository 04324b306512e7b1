"""Writing a .safetensors file one tensor at a time.

The safetensors library's writers take every tensor at once, so exporting a model that way
holds the whole converted model in memory next to the checkpoint being read. The format is
small and fixed (https://github.com/huggingface/safetensors#format): an 8-byte little-endian
header length, a JSON header giving each tensor's dtype, shape and byte range, then the raw
little-endian bytes. Since every shape is known before any weight is read, the header is
written first and each tensor is streamed to the file as soon as it is converted, then freed.
Files are read back with the safetensors library itself (transformers, the tests).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path
from typing import Iterable

import torch

_DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def write_safetensors(
    path: str | Path,
    layout: dict[str, tuple[tuple[int, ...], torch.dtype]],
    tensors: Iterable[tuple[str, torch.Tensor]],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write `tensors` ((name, tensor) pairs, produced lazily) to `path`.

    `layout`: name -> (shape, dtype) of every tensor, in the order `tensors` yields them; a
    tensor that does not match its entry raises ValueError (the file is then incomplete, so
    callers write into a staging directory).
    """
    if sys.byteorder != "little":  # the format is little-endian; so is every machine we run on
        raise RuntimeError("write_safetensors: big-endian hosts are not supported")
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, (shape, dtype) in layout.items():
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # tensor data starts 8-byte aligned, as the library lays it out
    expected = iter(layout.items())
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, t in tensors:
            want_name, (shape, dtype) = next(expected, (None, ((), None)))
            if name != want_name or tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                got = f"{name} {tuple(t.shape)} {t.dtype}"
                raise ValueError(f"{path}: got {got}, layout expects {want_name} {shape} {dtype}")
            f.write(memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy()))
        missing = [name for name, _ in expected]
        if missing:
            raise ValueError(f"{path}: tensors never written: {', '.join(missing[:4])}")
