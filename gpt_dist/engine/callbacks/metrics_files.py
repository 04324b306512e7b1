"""{run_dir}/metrics.jsonl (train and evaluation rows, "split" says which) and
{run_dir}/events.jsonl (resume, checkpoint, signal, skipped batches, stop), rank 0."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from gpt_dist.engine.callbacks.base import Callback

log = logging.getLogger(__name__)


def append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")


def read_jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a jsonl file, leaving out a line a kill cut short (it is not valid JSON)."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_torn_line(path: Path) -> bool:
    """Cut a last line that a kill left half-written (no newline at the end, or not JSON), so
    appended rows start on a line of their own. True when something was cut."""
    if not path.is_file():
        return False
    data = path.read_bytes()
    keep = len(data)
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
    else:
        last_start = data.rfind(b"\n", 0, max(0, len(data) - 1)) + 1
        try:
            if data[last_start:].strip():
                json.loads(data[last_start:])
        except json.JSONDecodeError:
            keep = last_start
    if keep == len(data):
        return False
    with path.open("r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("%s: its last line was cut short (the run was killed while writing it); removed it", path)
    return True


class MetricsFiles(Callback):
    def __init__(self, run_dir: Path):
        self.metrics = run_dir / "metrics.jsonl"
        self.events = run_dir / "events.jsonl"

    def on_train_start(self, trainer):
        if trainer.dist.is_main:
            truncate_torn_line(self.metrics)
            truncate_torn_line(self.events)

    def on_log(self, trainer, metrics):
        if trainer.dist.is_main:
            append_jsonl(self.metrics, {"split": "train", **metrics})

    def on_eval(self, trainer, metrics):
        if trainer.dist.is_main:
            append_jsonl(self.metrics, {"split": "val", **metrics})

    def on_event(self, trainer, event):
        if trainer.dist.is_main:
            append_jsonl(self.events, {"time": time.time(), **event})
