"""Where a gpt_dist checkpoint's files are, and which checkpoints count as complete.

    <checkpoint dir>/
      latest                     DeepSpeed's pointer to the newest tag (may name an incomplete one)
      step_00000100/             one tag: DeepSpeed's own files (mp_rank_*_model_states.pt,
                                 zero_pp_rank_*_optim_states.pt, ...) plus
        gpt_dist.json            our metadata: step, tokens seen, resolved config, tokenizer, ...
        COMPLETE                 written last, by rank 0, after every rank has finished writing

Only a tag with COMPLETE is a checkpoint: a save killed half-way leaves a tag without it,
which resume, init_from and conversion all pass over. Pure path logic, no torch import.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from gpt_dist.errors import CheckpointError

COMPLETE_MARKER = "COMPLETE"
METADATA_FILE = "gpt_dist.json"
METADATA_FORMAT = 1
_TAG_RE = re.compile(r"^step_(\d{8,})$")


def tag_for_step(step: int) -> str:
    return f"step_{step:08d}"


def step_of_tag(tag: str) -> int:
    m = _TAG_RE.match(tag)
    if not m:
        raise CheckpointError(f"'{tag}' is not a gpt_dist checkpoint tag (expected step_NNNNNNNN)")
    return int(m.group(1))


def is_complete(tag_dir: Path) -> bool:
    return (tag_dir / COMPLETE_MARKER).is_file() and (tag_dir / METADATA_FILE).is_file()


def complete_tags(ckpt_dir: str | Path) -> list[str]:
    """Complete tags in `ckpt_dir`, oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    tags = [p.name for p in d.iterdir() if p.is_dir() and _TAG_RE.match(p.name) and is_complete(p)]
    return sorted(tags, key=step_of_tag)


def latest_complete_tag(ckpt_dir: str | Path) -> str | None:
    tags = complete_tags(ckpt_dir)
    return tags[-1] if tags else None


def resolve_tag(ckpt_dir: str | Path, tag: str | None = None) -> tuple[Path, str]:
    """(checkpoint dir, tag) for `tag`, or for the latest complete one; errors name the problem.

    `ckpt_dir` may also be a tag folder itself (.../ckpt/step_00000100).
    """
    d = Path(ckpt_dir)
    if not d.exists():
        raise CheckpointError(f"{d}: no such checkpoint directory")
    if tag is None and _TAG_RE.match(d.name) and (d / METADATA_FILE).exists():
        d, tag = d.parent, d.name
    if tag is None:
        tag = latest_complete_tag(d)
        if tag is None:
            partial = sorted(p.name for p in d.iterdir() if p.is_dir() and _TAG_RE.match(p.name))
            if partial:
                raise CheckpointError(
                    f"{d}: no complete checkpoint; {', '.join(partial)} lack the {COMPLETE_MARKER} marker "
                    "(a save was interrupted); resume from an earlier run or retrain"
                )
            raise CheckpointError(f"{d}: not a gpt_dist checkpoint directory (no step_NNNNNNNN/ folders)")
        return d, tag
    if not (d / tag).is_dir():
        raise CheckpointError(f"{d / tag}: no such checkpoint tag; available: {', '.join(complete_tags(d)) or 'none'}")
    if not is_complete(d / tag):
        raise CheckpointError(f"{d / tag}: incomplete checkpoint (no {COMPLETE_MARKER} marker); pick another --tag")
    return d, tag


def read_metadata(tag_dir: str | Path) -> dict[str, Any]:
    path = Path(tag_dir) / METADATA_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; this folder is not a gpt_dist checkpoint tag") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt metadata ({e})") from None


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to a temporary name and rename it, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def mark_complete(tag_dir: str | Path) -> None:
    write_json_atomic(Path(tag_dir) / COMPLETE_MARKER, {"complete": True})
