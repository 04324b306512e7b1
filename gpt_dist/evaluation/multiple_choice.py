"""Multiple-choice accuracy on HellaSwag-format items, by the log-likelihood of each ending.

One JSON object per line: {"ctx": str, "endings": [str, ...], "label": int} (HellaSwag's own
validation file has these fields; extra fields are ignored). The user provides the file;
nothing is downloaded.

Scoring. Each ending is continued from the context with one space between them, as HellaSwag
and lm-eval-harness join them: the context is encoded, " " + ending is encoded, and the two
token lists are concatenated (whitespace at the end of `ctx` moves to the start of the ending,
lm-eval-harness's rule, so the context never ends in a lone space token). An empty context is
the end-of-text token. The model reads the whole sequence once; the ending's score is
ll = sum over its tokens t of log p(t | everything before it). Then, per item:

    acc             argmax ll                                  (sum of token log-likelihoods)
    acc_norm        argmax ll / number of ending tokens        (mean per token, build-nanogpt)
    acc_norm_chars  argmax ll / number of characters of ending (lm-eval-harness's acc_norm)

`acc_norm` is the per-token mean; `acc_norm_chars` is reported too so numbers can be put next
to lm-eval-harness's. Ties go to the lowest index. A sequence longer than the model's
block_size loses tokens from the start of its context.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpt_dist.errors import UserError
from gpt_dist.evaluation.lm_loss import autocast
from gpt_dist.model.gpt import IGNORE_INDEX


@dataclass
class MCItem:
    ctx: str
    endings: list[str]
    label: int
    where: str = ""  # "FILE:LINE", for error messages


@dataclass
class EncodedEnding:
    tokens: list[int]  # context + ending, at most block_size + 1
    n_ending: int  # the last n_ending tokens are the ending's
    n_chars: int  # characters of the ending text, without the joining space


def read_mc_file(path: str | Path) -> list[MCItem]:
    """Items of a HellaSwag-format .jsonl file; UserError naming the line and field at fault."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--mc {path}: no such file; give a .jsonl file with one {{ctx, endings, label}} object per line")
    items = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON ({e}); each line must be one object") from None
            if not isinstance(obj, dict):
                raise UserError(f"{where}: expected an object with ctx, endings, label")
            ctx, endings, label = obj.get("ctx"), obj.get("endings"), obj.get("label")
            if not isinstance(ctx, str):
                raise UserError(f"{where}: field 'ctx' must be a string (the context)")
            if not (isinstance(endings, list) and len(endings) >= 2 and all(isinstance(e, str) and e for e in endings)):
                raise UserError(f"{where}: field 'endings' must be a list of at least 2 non-empty strings")
            if isinstance(label, str) and label.strip().isdigit():  # HellaSwag's own files use "0".."3" in places
                label = int(label)
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(endings):
                raise UserError(f"{where}: field 'label' must be an integer index into endings (0..{len(endings) - 1}), got {label!r}")
            items.append(MCItem(ctx=ctx, endings=endings, label=label, where=where))
    if not items:
        raise UserError(f"--mc {path}: no items; the file is empty")
    return items


def encode_item(item: MCItem, tokenizer: Any, block_size: int) -> list[EncodedEnding]:
    """Token sequences of every ending of `item`, as the module docstring describes."""
    ctx = item.ctx.rstrip()
    moved = item.ctx[len(ctx):]  # trailing whitespace of the context
    ctx_ids = tokenizer.encode(ctx) if ctx else [tokenizer.eot_id]
    out = []
    for j, ending in enumerate(item.endings):
        end_ids = tokenizer.encode(moved + " " + ending)
        if len(end_ids) > block_size:
            raise UserError(
                f"{item.where}: endings[{j}] is {len(end_ids)} tokens, more than the model's block_size "
                f"({block_size}); shorten it or drop the item"
            )
        tokens = (ctx_ids + end_ids)[-(block_size + 1):]
        out.append(EncodedEnding(tokens=tokens, n_ending=len(end_ids), n_chars=len(ending)))
    return out


@torch.no_grad()
def ending_loglikelihoods(
    model: torch.nn.Module,
    endings: Sequence[EncodedEnding],
    device: torch.device,
    micro_batch: int = 16,
    precision: str = "fp32",
) -> list[float]:
    """ll (nats) of each ending given its context, in the order given.

    Rows are run `micro_batch` at a time, longest first, right-padded: a causal model's outputs
    at real positions do not depend on the padding after them, and padded targets are ignored.
    """
    model.eval()
    lls = [0.0] * len(endings)
    order = sorted(range(len(endings)), key=lambda i: -len(endings[i].tokens))
    for start in range(0, len(order), micro_batch):
        rows = order[start : start + micro_batch]
        width = max(len(endings[i].tokens) for i in rows) - 1
        x = torch.zeros(len(rows), width, dtype=torch.long)
        y = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for r, i in enumerate(rows):
            t = torch.tensor(endings[i].tokens, dtype=torch.long)
            n = len(t) - 1
            x[r, :n] = t[:-1]
            k = endings[i].n_ending
            y[r, n - k : n] = t[-k:]  # only the ending's tokens are scored
        with autocast(device, precision):
            nll = model(x.to(device), y.to(device), reduction="none")  # (R, T), 0 where ignored
        for r, ll in zip(rows, (-nll.double().sum(dim=1)).tolist()):
            lls[r] = ll
    return lls


def score_items(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Sequence[MCItem],
    device: torch.device,
    *,
    micro_batch: int = 16,
    precision: str = "fp32",
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """acc, acc_norm, acc_norm_chars and items over `items`; rank r scores items r, r+W, ...
    and under torch.distributed the counts of every rank are added."""
    block_size = model.config.block_size
    mine = list(items)[rank::world_size]
    encoded = [encode_item(item, tokenizer, block_size) for item in mine]
    flat = [e for enc in encoded for e in enc]
    lls = ending_loglikelihoods(model, flat, device, micro_batch=micro_batch, precision=precision)
    counts = torch.zeros(4, dtype=torch.float64, device=device)  # items, acc, acc_norm, acc_norm_chars
    pos = 0
    for item, enc in zip(mine, encoded):
        ll = lls[pos : pos + len(enc)]
        pos += len(enc)
        counts[0] += 1
        counts[1] += _argmax(ll) == item.label
        counts[2] += _argmax([v / e.n_ending for v, e in zip(ll, enc)]) == item.label
        counts[3] += _argmax([v / e.n_chars for v, e in zip(ll, enc)]) == item.label
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(counts)
    n, acc, acc_norm, acc_chars = counts.tolist()
    return {"acc": acc / n, "acc_norm": acc_norm / n, "acc_norm_chars": acc_chars / n, "items": int(n)}


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))
