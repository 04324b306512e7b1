"""Causal self-attention kernels behind one function.

`attn_impl`:
  flash_attn  the `flash-attn` package's FlashAttention-2 (CUDA, fp16/bf16 only)
  sdpa        torch's scaled_dot_product_attention; on CUDA with fp16/bf16 it is pinned to
              the FlashAttention kernel so a silent fall-back to the slow math kernel cannot
              happen
  math        a plain softmax(QK^T/sqrt(d))V reference
  auto        the fastest of these that works for the tensors it is given

All kernels take q, k, v as (B, T, H, D) and return (B, T, H, D).
A `mask` (B, 1, Tq, Tk) of booleans, True = may attend, replaces the causal mask; it is
used for packed samples (attention within a segment only) and left-padded generation.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math

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


_announced: set[tuple[str, str, str]] = set()


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention over (B, T, H, D) tensors; `impl` as in the module docstring."""
    chosen = resolve_attn_impl(impl, q.device, q.dtype)
    key = (impl, chosen, f"{q.device.type}/{q.dtype}")
    if key not in _announced:
        _announced.add(key)
        log.info("attention: attn_impl=%s runs the %s kernel on %s", impl, chosen, key[2])
    if chosen == "math":
        return _math_attention(q, k, v, mask)
    if chosen == "flash_attn" and mask is None and q.shape[1] == k.shape[1]:
        from flash_attn import flash_attn_func

        return flash_attn_func(q, k, v, causal=True)
    return _sdpa_attention(q, k, v, mask)


def _sdpa_attention(q, k, v, mask):
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


def _math_attention(q, k, v, mask):
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    scores = (q @ k.transpose(-2, -1)).float() * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, Tq, Tk)
    if mask is None:
        mask = _causal_mask(q.shape[2], k.shape[2], q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    y = scores.softmax(dim=-1).to(v.dtype) @ v
    return y.transpose(1, 2)


def _causal_mask(tq: int, tk: int, device: torch.device) -> torch.Tensor:
    """(Tq, Tk) booleans; the queries are the last Tq of the Tk positions (Tq < Tk with a KV cache)."""
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=tk - tq)


def segment_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) segment ids -> (B, 1, T, T) causal mask that stays inside each segment."""
    t = segment_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (same & causal)[:, None]
