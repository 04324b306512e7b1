"""What a model costs: its parameters, its training FLOPs per token, and the peak FLOP/s of the
GPUs it runs on. Pure arithmetic on a ModelConfig; no torch. `gpt-dist plan` sizes runs with
these functions and the trainer and `gpt-dist bench` compute MFU with the same ones.

`flops_per_token` is the PaLM (Chowdhery et al. 2022, app. B) / nanoGPT estimate 6·N + 12·L·d·T,
with N = every parameter except the position embedding (as nanoGPT's `estimate_mfu` does: the
tied token embedding is the LM-head matmul, the position embedding is only a lookup).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from gpt_dist.config import ModelConfig
from gpt_dist.errors import UserError


@dataclass(frozen=True)
class GPUSpec:
    peak_flops: float  # dense bf16 tensor-core FLOP/s
    memory_gib: float  # the memory the card reports (nvidia-smi's MiB / 1024), GiB


GPUS: dict[str, GPUSpec] = {
    "a100-40gb": GPUSpec(peak_flops=312e12, memory_gib=40960 / 1024),
    "a100-80gb": GPUSpec(peak_flops=312e12, memory_gib=81920 / 1024),
    "h100-80gb": GPUSpec(peak_flops=989e12, memory_gib=81559 / 1024),  # SXM
    "h200": GPUSpec(peak_flops=989e12, memory_gib=143771 / 1024),  # SXM
}


def num_parameters(m: ModelConfig, non_embedding: bool = False) -> int:
    """Parameters of the real model, counted as GPT.num_parameters() counts them.

    Vocab padding rows are not parameters of the real model. A tied LM head is the token
    embedding, so it adds nothing (an untied llama head does). `non_embedding=True` follows
    Kaplan et al. 2020: the token and position embeddings (and an untied head) are left out.
    """
    d, L = m.n_embd, m.n_layer
    if m.arch == "llama":  # RMSNorms, q/k/v/o with n_kv_head key/value heads, SwiGLU; no positions
        hd, tables = m.head_dim, 1 if m.tie_embeddings else 2
        attn = d * d + 2 * d * m.n_kv_head * hd + d * d + (2 * hd if m.qk_norm else 0)
        n = L * (2 * d + attn + 3 * d * m.mlp_hidden) + d
        return n if non_embedding else n + tables * m.vocab_size * d
    ln = 2 * d if m.bias else d  # LayerNorm weight (+ bias)
    attn = d * 3 * d + d * d + (4 * d if m.bias else 0)  # c_attn, c_proj
    mlp = d * 4 * d + 4 * d * d + (5 * d if m.bias else 0)  # c_fc, c_proj
    blocks = L * (2 * ln + attn + mlp)
    n = blocks + ln  # + ln_f
    if not non_embedding:
        n += m.vocab_size * d + m.block_size * d
    return n


def stored_parameters(m: ModelConfig) -> int:
    """Parameters held in memory: the real ones plus the vocab padding rows."""
    return num_parameters(m) + (m.padded_vocab_size - m.vocab_size) * m.n_embd


def flops_per_token(m: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token: 6·N + 12·L·d·T.

    N = all parameters except the position embedding (nanoGPT's `estimate_mfu` convention:
    the tied token embedding does the LM-head matmul, the position embedding is a lookup);
    12·L·d·T are the attention matmuls QKᵀ and AV over T = `seq_len` (PaLM counts them
    without the causal saving). Vocab padding is not counted: it is not model work.
    """
    n = num_parameters(m)
    if m.arch == "llama":  # an untied embedding is a lookup too; the head is the matmul
        n -= 0 if m.tie_embeddings else m.vocab_size * m.n_embd
    else:
        n -= m.block_size * m.n_embd
    return 6.0 * n + 12.0 * m.n_layer * m.n_embd * seq_len


def peak_flops(gpu: str) -> float:
    """Dense bf16 peak FLOP/s of a `--gpu` name (a100-40gb, a100-80gb, h100-80gb, h200)."""
    return gpu_spec(gpu).peak_flops


def gpu_spec(gpu: str) -> GPUSpec:
    """Peak FLOP/s and memory of a `--gpu` name (case-insensitive); UserError if unknown."""
    if gpu.lower() not in GPUS:
        close = difflib.get_close_matches(gpu.lower(), GPUS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"--gpu: unknown GPU '{gpu}'{hint}; choose one of {', '.join(GPUS)}")
    return GPUS[gpu.lower()]


def detect_peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s for a `torch.cuda.get_device_name()` string, None if unknown.

    e.g. "NVIDIA A100-SXM4-80GB" -> 312e12, "NVIDIA H100 80GB HBM3" -> 989e12,
    "NVIDIA H200" -> 989e12. PCIe and NVL H100/H200 cards run at lower clocks and power, so
    they get their own (lower) datasheet figures.
    """
    name = device_name.lower()
    if "a100" in name or "a800" in name:
        return 312e12  # SXM and PCIe alike
    if any(k in name for k in ("h100", "h200", "h800", "gh200")):
        if "pcie" in name:
            return 756e12
        if "nvl" in name:
            return 835e12
        return 989e12
    return None
