"""An output directory that is either complete or absent.

Converters write into a hidden temporary folder beside the destination and rename it into
place at the end: a crash, a bad input found half-way or Ctrl-C leaves nothing that could be
mistaken for a finished export.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gpt_dist.errors import CheckpointError


def check_output_dir(out_dir: str | Path) -> Path:
    """`out_dir` as a Path, if it may be written: absent, or an empty directory."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out}: already exists and is not empty; choose a new output directory or remove it")
    return out


@contextmanager
def staged_output_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes `out_dir`, on any error it is deleted."""
    out = check_output_dir(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should not be
        check_output_dir(out)  # still free after the (possibly long) conversion
        os.replace(tmp, out)  # atomic; replaces an empty directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
