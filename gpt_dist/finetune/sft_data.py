"""SFT samples: jsonl records -> conversations -> token ids with a loss mask.

One JSON object per line, in any of these forms (files may mix them):

    {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}
    {"instruction": "...", "input": "...", "output": "..."}     Alpaca; "input" may be "" or absent
    {"prompt": "...", "completion": "..."}

A sample is tokenized through the chat template with the loss on every assistant reply
(ending with its end-of-text token) and on nothing else. It must fit `train.seq_len + 1`
tokens (the inputs are all tokens but the last, the targets all but the first); a longer one
keeps its whole leading turns that fit or is dropped (`finetune.overlong`), never cut inside
a reply. Everything dropped or shortened is counted in the DataReport.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from gpt_dist.errors import DataError
from gpt_dist.finetune.chat_template import ChatTemplate, Encoded, check_messages
from gpt_dist.finetune.data_report import BadSample, DataReport

T = TypeVar("T")

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")


@dataclass
class SFTSample:
    """ids: (n,) int32 token ids; trained: (n,) bool, token j is a target with loss."""

    ids: np.ndarray
    trained: np.ndarray
    where: str  # file:line, for reports

    def __len__(self) -> int:
        return len(self.ids)


def jsonl_files(path: str | Path, key: str) -> list[Path]:
    """`path` itself, or the *.jsonl(.gz) files of a directory, sorted; errors name `key`."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(JSONL_SUFFIXES))
        if files:
            return files
        raise DataError(f"{key}={path}: the directory holds no .jsonl files; point it at a jsonl file or a folder of them")
    raise DataError(f"{key}={path}: no such file or directory; point it at a jsonl file (one JSON object per line)")


def read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """(file:line, the decoded object or a BadSample) for each non-blank line."""
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield where, BadSample("invalid_json", str(e))
                continue
            yield where, obj if isinstance(obj, dict) else BadSample("invalid_json", "not a JSON object")


def record_to_messages(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation of an SFT record, in any accepted form (not yet checked)."""
    if "messages" in rec:
        return rec["messages"]
    if "instruction" in rec and "output" in rec:
        instruction, extra = rec["instruction"], rec.get("input") or ""
        if not isinstance(instruction, str) or not isinstance(extra, str):
            raise BadSample("bad_content", "instruction and input must be strings")
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}]
        if rec.get("system"):
            messages.insert(0, {"role": "system", "content": rec["system"]})
        return messages
    if "prompt" in rec and "completion" in rec:
        return [{"role": "user", "content": rec["prompt"]}, {"role": "assistant", "content": rec["completion"]}]
    raise BadSample("unknown_format", f"keys {sorted(rec)[:6]}")


def fit_to_context(enc: Encoded, max_tokens: int, overlong: str) -> tuple[Encoded, int]:
    """`enc` cut after its last whole reply that ends within `max_tokens`; (cut enc, turns dropped).

    Raises BadSample when even the first reply does not fit (or any does not, with overlong=drop_sample).
    """
    if len(enc.ids) <= max_tokens:
        return enc, 0
    if enc.prompt_length >= max_tokens:
        raise BadSample("prompt_longer_than_context", f"{enc.prompt_length} prompt tokens, room for {max_tokens - 1}")
    fitting = [e for e in enc.turn_ends if e <= max_tokens]
    if overlong == "drop_sample" or not fitting:
        raise BadSample("reply_does_not_fit", f"{len(enc.ids)} tokens, room for {max_tokens}")
    end = fitting[-1]
    return Encoded(enc.ids[:end], enc.trained[:end], fitting), len(enc.turn_ends) - len(fitting)


def encode_sft_record(rec: Any, template: ChatTemplate, max_tokens: int, overlong: str) -> tuple[Encoded, int]:
    """(encoded conversation fitted to `max_tokens`, turns dropped); BadSample when unusable."""
    if isinstance(rec, BadSample):
        raise rec
    messages = check_messages(record_to_messages(rec), template.end_marker)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise BadSample("no_assistant_turn", f"roles {[m['role'] for m in messages]}")
    # Turns after the last reply have nothing to learn from.
    enc = template.encode(messages[: last + 1], train="all")
    return fit_to_context(enc, max_tokens, overlong)


def load_sft_samples(
    sources: Sequence[tuple[str, float]], template: ChatTemplate, seq_len: int, overlong: str,
    report: DataReport, seed: int, key: str = "data.train",
) -> list[SFTSample]:
    """Read, check and tokenize every source; `weight` scales how often a source's samples appear
    per epoch (2.0 = each twice; 0.5 = a fixed, seeded half). Drops are counted in `report`."""

    def encode(where: str, rec: Any) -> SFTSample:
        enc, cut_turns = encode_sft_record(rec, template, seq_len + 1, overlong)
        if cut_turns:
            report.shortened += 1
            report.turns_dropped += cut_turns
        report.tokens += len(enc.ids)
        report.trained_tokens += sum(enc.trained)
        return SFTSample(np.asarray(enc.ids, np.int32), np.asarray(enc.trained, bool), where)

    out = load_sources(sources, encode, report, seed, key)
    report.extra["samples_per_epoch"] = len(out)
    return out


def load_sources(sources: Sequence[tuple[str, float]], encode: Callable[[str, Any], T], report: DataReport,
                 seed: int, key: str) -> list[T]:
    """Every record of every (jsonl path, weight) source through `encode(where, record)`, which
    raises BadSample for a record it cannot use (counted in `report` and skipped), repeated by
    weight (`repeat_by_weight`, seeded per source)."""
    out: list[T] = []
    for i, (path, weight) in enumerate(sources):
        items: list[T] = []
        for f in jsonl_files(path, f"{key}[{i}].path" if key == "data.train" else key):
            n_before = report.read
            for where, rec in read_jsonl(f):
                report.read += 1
                try:
                    items.append(encode(where, rec))
                except BadSample as bad:
                    report.drop(where, bad)
            report.files[str(f)] = report.read - n_before
        report.kept += len(items)
        out += repeat_by_weight(items, weight, seed + i)
    return out


def repeat_by_weight(items: list, weight: float, seed: int) -> list:
    """`items` floor(weight) times plus a seeded random share of the fractional part."""
    whole, frac = int(weight), weight - int(weight)
    out = items * whole
    if frac > 0 and items:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.permutation(len(items))[: round(frac * len(items))])
        out += [items[j] for j in pick]
    return out
