"""Cross-entropy of the LM head, without ever holding the logits of the whole micro-batch.

The plain path, `F.cross_entropy(lm_head(x).float(), targets)`, keeps (N, V) logits, their fp32
copy, the log-softmax and, in backward, a gradient of the same size: for gpt2 at 4 x 1024 tokens
and V = 50304, about 0.8 GB each. Here the N tokens go through the head `chunk` at a time; a
chunk's logits live only while its loss (and, when gradients are wanted, its gradient) is
computed. Same loss and gradients as the plain path, to float rounding.

- "sum" / "mean": one autograd Function that computes the gradients of the summed loss
  with respect to the hidden states and the head's weight in its forward pass (the upstream
  gradient of a scalar only scales them), so backward costs no matmul and nothing is recomputed:
  the three LM-head matmuls of the plain path, chunk by chunk.
- "none" (per-token losses, e.g. DPO's per-sequence sums): each chunk under
  torch.utils.checkpoint, so backward recomputes that chunk's logits (one extra head matmul).

Tokens without a loss (SFT's prompts and padding, DPO's prompts) contribute nothing, so on a CPU
only the counted rows go through the head: with a 50k vocabulary the head is most of a small
model's FLOPs, and an SFT batch counts a third of its tokens or fewer. On an accelerator the rows
stay as they are: choosing them needs their number on the host, a synchronisation per
micro-batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def lm_head_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    reduction: str,
    chunk: int,
) -> torch.Tensor:
    """hidden (N, C), head weight (V, C), bias (V,) or None, targets (N,) with IGNORE_INDEX where
    no loss; fp32 cross-entropy: summed ("sum"), mean over counted tokens ("mean"), or (N,) ("none").
    `chunk`: tokens per piece (0 = all at once, the plain path)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction={reduction!r}: use 'mean', 'sum' or 'none'")
    rows = _counted_rows(targets)
    if rows is not None:
        loss = _head_loss(hidden.index_select(0, rows), weight, bias, targets.index_select(0, rows), reduction, chunk)
        if reduction == "none":  # 0 where no loss, as F.cross_entropy gives
            return loss.new_zeros(targets.shape[0]).index_copy(0, rows, loss)
        return loss
    return _head_loss(hidden, weight, bias, targets, reduction, chunk)


def _counted_rows(targets: torch.Tensor) -> torch.Tensor | None:
    """The indices of the rows with a loss, when some have none and finding them is free (the
    targets are on the CPU); else None: every row goes through the head."""
    if targets.device.type != "cpu":
        return None
    counted = targets != IGNORE_INDEX
    if bool(counted.all()):
        return None
    return counted.nonzero().squeeze(1)


def _head_loss(hidden, weight, bias, targets, reduction: str, chunk: int) -> torch.Tensor:
    if chunk <= 0 or chunk >= hidden.shape[0]:
        loss = _token_losses(hidden, weight, bias, targets)
        return _reduce(loss, targets, reduction)
    if reduction == "none":
        pieces = [checkpoint(_token_losses, h, weight, bias, t, use_reentrant=False)
                  if torch.is_grad_enabled() else _token_losses(h, weight, bias, t)
                  for h, t in zip(hidden.split(chunk), targets.split(chunk))]
        return torch.cat(pieces)
    total = _ChunkedSumCrossEntropy.apply(hidden, weight, bias, targets, chunk)
    if reduction == "sum":
        return total
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)


def _token_losses(h, weight, bias, t):
    logits = F.linear(h, weight, bias)  # (n, V)
    return F.cross_entropy(logits.float(), t, ignore_index=IGNORE_INDEX, reduction="none")


def _reduce(loss: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / (targets != IGNORE_INDEX).sum().clamp(min=1)


class _ChunkedSumCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `F.linear(hidden, weight, bias)`; gradients computed in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):
        if ctx.needs_input_grad[2]:
            raise ValueError("chunked LM-head cross-entropy: the head's bias must not require a gradient")
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        device_type = hidden.device.type
        # The dtype the plain path's head matmul would run in: autocast's, else the weight's.
        # Cast once here, not per chunk, and keep autocast from casting again inside.
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if want_h else None
        # Accumulated over chunks in fp32 whatever the weight's dtype, as one plain backward
        # matmul accumulates in fp32 internally.
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        with torch.autocast(device_type, enabled=False):
            w = weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            for start in range(0, hidden.shape[0], chunk):
                h = hidden[start : start + chunk].to(dtype)  # (n, C)
                t = targets[start : start + chunk]  # (n,)
                z = F.linear(h, w, b).float()  # (n, V)
                counted = t != IGNORE_INDEX
                safe_t = torch.where(counted, t, 0)
                picked = z.gather(1, safe_t[:, None]).squeeze(1)  # (n,)
                # log-sum-exp and softmax in place in z: no second (n, V) tensor.
                top = z.amax(dim=-1, keepdim=True)
                z.sub_(top).exp_()
                norm = z.sum(dim=-1, keepdim=True)
                lse = (top + norm.log()).squeeze(1)
                total += torch.where(counted, lse - picked, 0.0).sum()
                if not (want_h or want_w):
                    continue
                # d(loss)/d(logits) = softmax - one_hot(target), zero on rows without a loss.
                weight_row = counted[:, None].to(z.dtype)  # (n, 1)
                g = z.mul_(weight_row / norm)  # softmax, in one pass with the masking
                g.scatter_add_(1, safe_t[:, None], -weight_row)
                g = g.to(dtype)
                if want_h:
                    grad_h[start : start + chunk] = g @ w
                if want_w:
                    if dtype == torch.float32:
                        grad_w.addmm_(g.t(), h)
                    else:
                        grad_w += (g.t() @ h).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total):
        grad_h, grad_w = ctx.saved_tensors
        # Scaled in place: the gradients were computed for this one backward (a second one,
        # retain_graph=True, would see them scaled twice, hence the guard).
        if getattr(ctx, "used", False):
            raise RuntimeError("chunked LM-head cross-entropy: backward through the same loss twice is not supported")
        ctx.used = True
        gh = grad_h.mul_(grad_total.to(grad_h.dtype)) if grad_h is not None else None
        gw = grad_w.mul_(grad_total).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None
