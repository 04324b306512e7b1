"""Causal self-attention kernels behind one function.

`attn_impl`:
  flash_attn  the `flash-attn` package's FlashAttention-2 (CUDA, fp16/bf16 only)
  sdpa        torch's scaled_dot_product_attention; on CUDA with fp16/bf16 it is pinned to
              the FlashAttention kernel so a silent fall-back to the slow math kernel cannot
              happen
  math        a plain softmax(QK^T/sqrt(d))V reference
  auto        the fastest of these that works for the tensors it is given

All kernels take q as (B, T, H, D) and k, v as (B, Tk, H_kv, D), and return (B, T, H, D).
H_kv divides H (grouped-query attention; H_kv = H is multi-head): query head j reads key/value
head j // (H / H_kv), the grouping of Hugging Face's `repeat_kv`. FlashAttention-2 reads the
shared heads as they are; sdpa and math repeat them first. `attention_kernel` picks one once,
when a model is set up for a device and dtype (GPT.set_attention_kernel).
Packed rows (several samples, each attending only within itself) come as `Segments`: the
flash_attn kernel runs FlashAttention-2's variable-length kernel on them, sdpa one causal SDPA
per segment; neither builds a (T, T) mask. A `mask` (B, 1, Tq, Tk) of booleans, True = may
attend, replaces the causal mask for left-padded generation with a KV cache.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

_HALF = (torch.float16, torch.bfloat16)


@functools.cache
def flash_attn_available() -> bool:
    if importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        import flash_attn  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a broken build must not break the model
        log.warning("flash-attn is installed but fails to import (%s); using sdpa", e)
        return False
    return True


def resolve_attn_impl(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """The kernel `requested` maps to for tensors on `device` in `dtype`."""
    if requested == "auto":
        if device.type == "cuda" and dtype in _HALF and flash_attn_available():
            return "flash_attn"
        return "sdpa"
    if requested == "flash_attn":
        if device.type != "cuda" or dtype not in _HALF:
            raise RuntimeError(
                f"model.attn_impl=flash_attn needs CUDA tensors in fp16/bf16, got {device.type}/{dtype}; "
                "use attn_impl: auto or sdpa on this device"
            )
        if not flash_attn_available():
            raise RuntimeError(
                "model.attn_impl=flash_attn but the flash-attn package is not installed; "
                "pip install 'gpt_dist[gpu]' or use attn_impl: auto"
            )
    return requested


@dataclass(frozen=True)
class Segments:
    """Packed rows described once per forward, for kernels that need no (T, T) mask.

    `segment_ids` (B, T): contiguous runs of one id are one segment; `cu_seqlens` (S + 1,) int32:
    where each of the S segments starts in the flattened (B * T) tokens, then B * T (a row start
    always starts a segment); `bounds`: the same on the host; `max_len`: the longest segment.
    """

    segment_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    bounds: tuple[int, ...]
    max_len: int

    @classmethod
    def from_ids(cls, segment_ids: torch.Tensor) -> "Segments":
        b, t = segment_ids.shape
        flat = segment_ids.reshape(-1)
        starts = torch.ones_like(flat, dtype=torch.bool)
        starts[1:] = flat[1:] != flat[:-1]
        starts[::t] = True
        cu = torch.cat([starts.nonzero().squeeze(1), flat.new_tensor([b * t])]).to(torch.int32)
        bounds = tuple(cu.tolist())  # one host sync per forward, shared by every layer
        return cls(segment_ids, cu, bounds, max(e - s for s, e in zip(bounds, bounds[1:])))


Kernel = Callable[..., torch.Tensor]


def attention_kernel(requested: str, device: torch.device, dtype: torch.dtype) -> Kernel:
    """The kernel for `requested` (module docstring) on `device` with activations in `dtype`,
    chosen once when a model is set up for them. The kernel takes q, k, v (B, T, H, D) and
    either a `mask` (B, 1, Tq, Tk) or `segments` (Segments), or neither (causal), and returns
    (B, T, H, D)."""
    chosen = resolve_attn_impl(requested, device, dtype)
    log.info("attention: attn_impl=%s runs the %s kernel on %s/%s", requested, chosen, device.type, dtype)
    return _KERNELS[chosen]


def kernel_name(kernel: Kernel | None) -> str | None:
    """The attn_impl name of a kernel `attention_kernel` returned (None: not chosen yet)."""
    return next((name for name, k in _KERNELS.items() if k is kernel), None)


def flash_attention(q, k, v, mask=None, segments=None):
    """FlashAttention-2; packed rows through its variable-length kernel (no mask at all). Both
    take k, v with fewer heads than q (MQA/GQA) natively, so the shared heads are never copied."""
    if segments is not None:
        return _flash_varlen(q, k, v, segments)
    if mask is None and q.shape[1] == k.shape[1]:
        from flash_attn import flash_attn_func

        return flash_attn_func(q, k, v, causal=True)
    return sdpa_attention(q, k, v, mask)


def sdpa_attention(q, k, v, mask=None, segments=None):
    """torch SDPA. Packed rows run one causal SDPA per segment, so its fused kernels apply and
    no (T, T) mask exists; an explicit mask (KV cache) goes to SDPA as given."""
    k, v = repeat_kv(k, q.shape[2]), repeat_kv(v, q.shape[2])
    if segments is not None:
        return _sdpa_per_segment(q, k, v, segments)
    return _sdpa(q, k, v, mask)


# The packed paths stay outside torch.compile's graphs (a graph break around them): their
# segment boundaries change with every batch, and a graph specialised on them would recompile
# each step. torch._disable_dynamo is torch.compiler.disable with torch._dynamo imported at the
# first call instead of here: that import takes about a second of every process's start-up,
# and runs that never compile (nor pack) never need it.
@torch._disable_dynamo
def _flash_varlen(q, k, v, segments: Segments) -> torch.Tensor:
    from flash_attn import flash_attn_varlen_func

    b, t, h, d = q.shape
    q, k, v = (x.reshape(b * t, x.shape[2], d) for x in (q, k, v))
    cu, n = segments.cu_seqlens, segments.max_len
    return flash_attn_varlen_func(q, k, v, cu, cu, n, n, causal=True).view(b, t, h, d)


@torch._disable_dynamo
def _sdpa_per_segment(q, k, v, segments: Segments) -> torch.Tensor:
    b, t, h, d = q.shape
    q, k, v = (x.reshape(b * t, h, d) for x in (q, k, v))
    bounds = segments.bounds
    out = [_sdpa(q[None, s:e], k[None, s:e], v[None, s:e], None)[0] for s, e in zip(bounds, bounds[1:])]
    return torch.cat(out).view(b, t, h, d)


def _sdpa(q, k, v, mask):
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    same_len = q.shape[2] == k.shape[2]
    if mask is None and same_len and q.is_cuda and q.dtype in _HALF and q.shape[-1] <= 256:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    elif mask is None and same_len:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        # SDPA's is_causal aligns top-left; with a KV cache the queries are the last keys.
        mask = _causal_mask(q.shape[2], k.shape[2], q.device) if mask is None else mask
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return y.transpose(1, 2)


def math_attention(q, k, v, mask=None, segments=None):
    """softmax(QK^T/sqrt(d))V in fp32 with a materialised mask: the reference the others match."""
    if segments is not None:
        mask = segment_mask(segments.segment_ids)
    k, v = repeat_kv(k, q.shape[2]), repeat_kv(v, q.shape[2])
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    scores = (q @ k.transpose(-2, -1)).float() * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, Tq, Tk)
    if mask is None:
        mask = _causal_mask(q.shape[2], k.shape[2], q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    y = scores.softmax(dim=-1).to(v.dtype) @ v
    return y.transpose(1, 2)


def repeat_kv(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, H_kv, D) keys or values -> (B, T, n_head, D), each kv head repeated for the
    n_head / H_kv query heads of its group (a no-op for multi-head attention)."""
    n_kv = x.shape[2]
    if n_kv == n_head:
        return x
    if n_head % n_kv:
        raise ValueError(f"{n_head} query heads cannot share {n_kv} key/value heads evenly")
    return x.repeat_interleave(n_head // n_kv, dim=2)


_KERNELS: dict[str, Kernel] = {"flash_attn": flash_attention, "sdpa": sdpa_attention, "math": math_attention}


def _causal_mask(tq: int, tk: int, device: torch.device) -> torch.Tensor:
    """(Tq, Tk) booleans; the queries are the last Tq of the Tk positions (Tq < Tk with a KV cache)."""
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=tk - tq)


def segment_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) segment ids -> (B, 1, T, T) causal mask that stays inside each segment."""
    t = segment_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (same & causal)[:, None]
