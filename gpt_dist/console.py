"""What a user sees on the terminal: gpt_dist's own lines, not other libraries' chatter.

`quiet()` (the CLI calls it through `setup` unless --verbose) drops the start-up banners DeepSpeed prints on
every command ("Setting accelerator to CPU", "... built successfully") and the deprecation
warnings of the library versions gpt_dist pins: none of them is something a user can act on.
`stderr_to(path)` sends everything written to the stderr file descriptor to a file for a while
(datatrove's logs and progress bars, also those of its worker processes), for `prepare`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Iterator, TextIO

# DeepSpeed's start-up banners: its logger's accelerator lines, and a print() of each C++ op
# it loads (gpt_dist loads the shared-memory all-reduce op on every CPU run).
BANNERS = re.compile(r"Setting accelerator to |Setting ds_accelerator to |^DeepSpeed \S+ built successfully$")

# Deprecations inside the pinned libraries (torch, DeepSpeed, transformers, peft, datatrove) that
# they raise on their own code paths, dozens of times per ZeRO-3 run. gpt_dist's own warnings and
# every other category stay visible.
LIBRARY_WARNINGS = (FutureWarning, DeprecationWarning, PendingDeprecationWarning)
LIBRARY_MODULES = r"(torch|deepspeed|transformers|peft|datatrove|torchvision|accelerate|lightning_utilities)(\.|$)"


class _DropBanners(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not BANNERS.search(record.getMessage())


_DROP_BANNERS = _DropBanners()  # one instance: addFilter ignores a filter it already has


class _BannerFreeStream:
    """A text stream that passes everything to `target` except whole lines matching BANNERS.

    Only complete lines are held back to be checked; `flush()` passes a partial line on at once,
    so prompts (`chat`'s "you> ") and progress bars appear as they are written.
    """

    def __init__(self, target: TextIO):
        self.target = target
        self._partial = ""

    def write(self, s: str) -> int:
        text = self._partial + s
        lines = text.split("\n")
        self._partial = lines.pop()
        out = "".join(line + "\n" for line in lines if not BANNERS.search(line))
        if out:
            self.target.write(out)
        return len(s)

    def flush(self) -> None:
        if self._partial:
            self.target.write(self._partial)
            self._partial = ""
        self.target.flush()

    def __getattr__(self, name: str):  # fileno, isatty, encoding, buffer...: the real stream's
        return getattr(self.target, name)


def setup(verbose: bool) -> None:
    """The CLI's console: everything with --verbose, else `quiet()`."""
    if not verbose:
        quiet()


def quiet() -> None:
    """Filter DeepSpeed's banners and the pinned libraries' deprecation warnings, process-wide."""
    # The DeepSpeed logger is created when deepspeed is imported; getLogger returns that same
    # object then, so a filter added now is in place for the accelerator banner at import time.
    logging.getLogger("DeepSpeed").addFilter(_DROP_BANNERS)
    for category in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", category=category, module=LIBRARY_MODULES)
    if not isinstance(sys.stdout, _BannerFreeStream):
        sys.stdout = _BannerFreeStream(sys.stdout)


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[Path]:
    """Send file descriptor 2 and sys.stderr to `path` (appending) for the `with` block.

    sys.stderr becomes a writer on descriptor 2 itself, so whatever keeps a reference to it past
    the block (loguru sinks are added with the sys.stderr of the moment) writes to the terminal
    again once descriptor 2 is restored.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved_fd, saved_stream = os.dup(2), sys.stderr
    try:
        with open(path, "ab") as f:
            os.dup2(f.fileno(), 2)
        sys.stderr = open(2, "w", buffering=1, closefd=False, encoding="utf-8", errors="backslashreplace")
        yield path
    finally:
        sys.stderr.flush()
        sys.stderr = saved_stream
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
