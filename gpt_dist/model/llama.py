"""The LLaMA family beside GPT-2: pre-RMSNorm blocks, rotary position embeddings, SwiGLU MLP,
grouped-query attention, no biases, optional QK-norm, tied or untied LM head.

It shares with GPT-2 everything that is not the block: `GPT.forward` (masks, packed segments,
the KV cache, which holds `n_kv_head` heads), the attention kernels (one entry point, chosen
once by `set_attention_kernel`), the LM head and its chunked loss, and the parameter layout
the engine, LoRA and the checkpoints rely on: transformer.wte, transformer.h.N.{ln_1, attn,
ln_2, mlp}, transformer.ln_f, lm_head. Inside a block the names keep GPT-2's roles:

    attn.c_attn  (n_head + 2 n_kv_head) * head_dim x n_embd: q, k, v fused, in that order
    attn.c_proj  n_embd x n_embd
    mlp.c_fc     2 * mlp_hidden x n_embd: SwiGLU's gate then up projection, fused
    mlp.c_proj   n_embd x mlp_hidden
    attn.q_norm, attn.k_norm (head_dim,) with model.qk_norm

so LoRA's target modules (c_attn, c_proj, c_fc) mean the same in both families. Rotary
embeddings rotate the two halves of each head (Hugging Face Llama's `rotate_half` layout), so
converting to LlamaForCausalLM only splits the fused weights (gpt_dist.checkpoint.llama_adapter).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt_dist.config import ModelConfig
from gpt_dist.model.attention import Kernel, Segments
from gpt_dist.model.gpt import GPT, KVCache

__all__ = ["Llama", "RMSNorm", "rotary_tables"]

Rope = tuple[torch.Tensor, torch.Tensor]


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dimension, normalised in fp32 whatever x's dtype."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotary_tables(position_ids: torch.Tensor, head_dim: int, theta: float) -> Rope:
    """Positions (B or 1, T) -> fp32 (cos, sin), each (B or 1, T, 1, head_dim): angle
    position * theta^(-2i/head_dim) for channel pair i, repeated over the two halves."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=position_ids.device).float() / head_dim
    inv_freq = 1.0 / (theta**exponent)  # (D/2,)
    angles = position_ids[..., None].float() * inv_freq  # (B, T, D/2)
    angles = torch.cat([angles, angles], dim=-1)[:, :, None, :]  # (B, T, 1, D)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate (B, T, H, D) queries or keys by their positions' angles (`rotary_tables`)."""
    cos, sin = (t.to(x.dtype) for t in rope)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.kernel: Kernel | None = None  # set by GPT.set_attention_kernel
        kv = cfg.n_kv_head * cfg.head_dim
        self.c_attn = nn.Linear(cfg.n_embd, cfg.n_embd + 2 * kv, bias=False)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, kv_cache: KVCache | None, layer: int,
        segments: Segments | None, rope: Rope,
    ) -> torch.Tensor:
        b, t, c = x.shape  # (B, T, C)
        h, hkv, d = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.c_attn(x).split([h * d, hkv * d, hkv * d], dim=-1)
        q, k, v = q.view(b, t, h, d), k.view(b, t, hkv, d), v.view(b, t, hkv, d)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, rope), apply_rotary(k, rope)
        if kv_cache is not None:
            k, v = kv_cache.append(layer, k, v)  # (B, past + T, H_kv, D): the cache holds kv heads only
        y = self.kernel(q, k, v, mask=mask, segments=segments)  # (B, T, H, D): the kernel groups kv heads
        return self.resid_dropout(self.c_proj(y.reshape(b, t, c)))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 2 * cfg.mlp_hidden, bias=False)  # gate, up
        self.c_proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.c_fc(x).chunk(2, dim=-1)
        return self.dropout(self.c_proj(F.silu(gate) * up))


class LlamaBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = LlamaAttention(cfg)
        self.ln_2 = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, kv_cache: KVCache | None = None, layer: int = 0,
        segments: Segments | None = None, rope: Rope | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, kv_cache, layer, segments, rope)
        return x + self.mlp(self.ln_2(x))


class Llama(GPT):
    """model.arch: llama. Same forward, loss, KV cache and kernels as GPT (see GPT.forward)."""

    arch = "llama"

    @staticmethod
    def trunk(cfg: ModelConfig) -> dict[str, nn.Module]:
        return dict(
            wte=nn.Embedding(cfg.padded_vocab_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.n_layer)),
            ln_f=RMSNorm(cfg.n_embd, cfg.norm_eps),
        )

    def init_weights(self) -> None:
        super().init_weights()
        if self.config.zero_init_proj:
            # Each block then starts as the identity on the residual stream; the projections
            # still get gradients (their inputs are not zero), so they leave zero on step one.
            for block in self.transformer.h:
                nn.init.zeros_(block.attn.c_proj.weight)
                nn.init.zeros_(block.mlp.c_proj.weight)

    def embed(self, idx: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, Rope]:
        """Token ids (B, T) -> (B, T, C); positions (B or 1, T) -> the rotary tables of every block."""
        c = self.config
        return self.transformer.drop(self.transformer.wte(idx)), rotary_tables(position_ids, c.head_dim, c.rope_theta)
