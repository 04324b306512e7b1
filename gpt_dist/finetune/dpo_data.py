"""DPO preference pairs: jsonl records -> (chosen, rejected) token ids, loss on the reply only.

One JSON object per line:

    {"prompt": "...", "chosen": "...", "rejected": "..."}
    {"messages": [{"role": ..., "content": ...}, ...], "chosen": "...", "rejected": "..."}

`prompt` may also be a message list; a reply may also be an {"role": "assistant", "content"}
object or a message list ending with one. Both sequences are the prompt plus one reply
through the chat template; only the reply and its end-of-text token count towards the
log-probability. A pair whose prompt and longer reply do not fit `train.seq_len + 1` tokens
is dropped (a cut reply would bias the preference), never truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from gpt_dist.finetune.chat_template import ChatTemplate, check_messages
from gpt_dist.finetune.data_report import BadSample, DataReport
from gpt_dist.finetune.row_packing import padded_batch
from gpt_dist.finetune.sft_data import load_sources


@dataclass
class DPOPair:
    """Token ids (n,) int32 and loss masks (n,) bool of both sequences; `where` = file:line."""

    chosen_ids: np.ndarray
    chosen_trained: np.ndarray
    rejected_ids: np.ndarray
    rejected_trained: np.ndarray
    where: str


def _reply(value: Any, field: str) -> str:
    if isinstance(value, list) and value:
        value = value[-1]
    if isinstance(value, dict):
        if value.get("role", "assistant") != "assistant":
            raise BadSample("unknown_format", f"'{field}' must be the assistant's reply")
        value = value.get("content")
    if not isinstance(value, str) or not value.strip():
        raise BadSample("bad_content", f"'{field}' is empty or not a string")
    return value


def record_to_pair(rec: dict[str, Any], end_marker: str) -> tuple[list[dict[str, str]], str, str]:
    """(prompt messages, chosen reply, rejected reply) of a DPO record, checked."""
    if "chosen" not in rec or "rejected" not in rec or not ("prompt" in rec or "messages" in rec):
        raise BadSample("unknown_format", f"keys {sorted(rec)[:6]}")
    prompt = rec["messages"] if "messages" in rec else rec["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise BadSample("bad_prompt", "the prompt is empty")
        prompt = [{"role": "user", "content": prompt}]
    messages = check_messages(prompt, end_marker)
    if messages[-1]["role"] == "assistant":
        raise BadSample("bad_prompt", "the prompt ends with an assistant turn; it must end with the user's")
    chosen, rejected = _reply(rec["chosen"], "chosen"), _reply(rec["rejected"], "rejected")
    for field, text in (("chosen", chosen), ("rejected", rejected)):
        if end_marker in text:
            raise BadSample("end_marker_in_content", f"'{field}' contains {end_marker!r}")
    if chosen.strip() == rejected.strip():
        raise BadSample("chosen_equals_rejected", "both replies are the same text")
    return messages, chosen, rejected


def encode_pair(rec: Any, template: ChatTemplate, max_tokens: int, where: str) -> DPOPair:
    if isinstance(rec, BadSample):
        raise rec
    messages, chosen, rejected = record_to_pair(rec, template.end_marker)
    encoded = []
    for reply in (chosen, rejected):
        enc = template.encode(messages + [{"role": "assistant", "content": reply}], train="last")
        if enc.prompt_length >= max_tokens:
            raise BadSample("prompt_longer_than_context", f"{enc.prompt_length} prompt tokens, room for {max_tokens - 1}")
        if len(enc.ids) > max_tokens:
            raise BadSample("reply_does_not_fit", f"{len(enc.ids)} tokens with the reply, room for {max_tokens}")
        encoded.append((np.asarray(enc.ids, np.int32), np.asarray(enc.trained, bool)))
    return DPOPair(*encoded[0], *encoded[1], where)


def load_dpo_pairs(sources: Sequence[tuple[str, float]], template: ChatTemplate, seq_len: int,
                   report: DataReport, seed: int, key: str = "data.train") -> list[DPOPair]:
    """Read, check and tokenize every source (weights as for SFT); drops counted in `report`."""

    def encode(where: str, rec: Any) -> DPOPair:
        pair = encode_pair(rec, template, seq_len + 1, where)
        report.tokens += len(pair.chosen_ids) + len(pair.rejected_ids)
        report.trained_tokens += int(pair.chosen_trained.sum() + pair.rejected_trained.sum())
        return pair

    out = load_sources(sources, encode, report, seed, key)
    report.extra["pairs_per_epoch"] = len(out)
    return out


def pair_batch(pairs: Sequence[DPOPair], seq_len: int, pad_id: int, multiple: int = 8) -> dict[str, torch.Tensor]:
    """(2B, T) input_ids and labels: the B chosen sequences, then the B rejected ones, right-padded
    to the longest (rounded up to `multiple`, at most `seq_len`); labels only on the replies."""
    seqs = [(p.chosen_ids, p.chosen_trained) for p in pairs] + [(p.rejected_ids, p.rejected_trained) for p in pairs]
    return padded_batch(seqs, seq_len, pad_id, multiple)
