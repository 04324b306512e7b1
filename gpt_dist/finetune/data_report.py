"""What happened to every SFT / DPO sample: kept, shortened, or dropped and why.

Nothing unusable is trained on silently: each dropped sample is counted under a reason, the
first few of each reason are listed as `file:line`, and the report is logged and written to
`{run_dir}/{stage}_data_report.json` before training starts. When more than
`finetune.max_bad_fraction` of the samples are dropped the run stops instead.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt_dist.errors import DataError

log = logging.getLogger(__name__)

# Every reason a sample can be dropped, with the fix a data author would apply.
REASONS = {
    "invalid_json": "the line is not a JSON object",
    "unknown_format": "expected {messages}, {instruction, input, output} or {prompt, completion} "
    "(DPO: {prompt, chosen, rejected} or {messages, chosen, rejected})",
    "unknown_role": "a message role other than system, user or assistant",
    "bad_content": "a message or reply whose content is not a non-empty string",
    "no_assistant_turn": "a conversation with no assistant reply to learn from",
    "bad_prompt": "a DPO prompt that is empty or does not end with a user (or system) turn",
    "end_marker_in_content": "the text contains the end-of-turn marker, which would forge a turn end",
    "prompt_longer_than_context": "the prompt alone does not fit in train.seq_len",
    "reply_does_not_fit": "the prompt fits but a reply would be cut at train.seq_len (finetune.overlong)",
    "chosen_equals_rejected": "a preference pair whose two replies are identical",
    "template_rejected": "the chat template raised an error for this conversation",
}
EXAMPLES_PER_REASON = 5


class BadSample(Exception):
    """A sample that cannot be trained on; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class DataReport:
    """Counts for one split (train or val) of an SFT / DPO run."""

    stage: str
    split: str
    files: dict[str, int] = field(default_factory=dict)  # samples read per file
    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    # drop_turns: conversations kept with their trailing turns removed, and how many turns went
    shortened: int = 0
    turns_dropped: int = 0
    tokens: int = 0  # tokens of the kept samples
    trained_tokens: int = 0  # of which carry a loss (assistant replies and their end markers)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. packing efficiency

    def drop(self, where: str, bad: BadSample) -> None:
        self.dropped[bad.reason] += 1
        ex = self.examples.setdefault(bad.reason, [])
        if len(ex) < EXAMPLES_PER_REASON:
            ex.append(f"{where}: {bad.detail}" if bad.detail else where)

    @property
    def bad_fraction(self) -> float:
        return sum(self.dropped.values()) / max(self.read, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage, "split": self.split, "files": self.files, "read": self.read, "kept": self.kept,
            "dropped": dict(self.dropped), "examples": self.examples, "shortened": self.shortened,
            "turns_dropped": self.turns_dropped, "tokens": self.tokens, "trained_tokens": self.trained_tokens,
            **self.extra,
        }

    def summary(self) -> str:
        parts = [f"{self.stage} {self.split} data: {self.kept}/{self.read} samples kept"]
        if self.dropped:
            parts.append("dropped " + ", ".join(f"{n} {r}" for r, n in sorted(self.dropped.items())))
        if self.shortened:
            parts.append(f"{self.shortened} shortened to the whole turns that fit ({self.turns_dropped} turns cut)")
        parts.append(f"{self.tokens} tokens, {self.trained_tokens} with loss")
        return "; ".join(parts)

    def publish(self, run_dir: str | Path | None, is_main: bool, max_bad_fraction: float) -> None:
        """Log the summary, write the JSON report (rank 0), and stop when too much was dropped."""
        path = None
        if run_dir is not None:
            path = Path(run_dir) / f"{self.stage}_{self.split}_data_report.json"
            if is_main:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
                tmp.replace(path)
        if is_main:
            (log.warning if self.dropped or self.shortened else log.info)("%s", self.summary())
            for reason, ex in self.examples.items():
                log.warning("  %s (%s), e.g. %s", reason, REASONS[reason], "; ".join(ex))
        where = f" (details in {path})" if path else ""
        if self.kept == 0:
            raise DataError(f"{self.stage} {self.split} data: no usable sample in {', '.join(self.files) or 'no file'}"
                            f"{where}; {self._advice()}")
        if self.bad_fraction > max_bad_fraction:
            raise DataError(
                f"{self.stage} {self.split} data: {sum(self.dropped.values())} of {self.read} samples are unusable "
                f"({self.bad_fraction:.1%} > finetune.max_bad_fraction={max_bad_fraction}){where}; {self._advice()}, "
                f"or raise finetune.max_bad_fraction to train on the rest"
            )

    def _advice(self) -> str:
        if not self.dropped:
            return "check data.train / data.val"
        top = self.dropped.most_common(1)[0][0]
        return f"most were dropped for {top} ({REASONS[top]}): fix the data"
