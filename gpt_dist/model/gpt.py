"""GPT-2 as OpenAI released it: pre-LayerNorm blocks, learned absolute positions,
tanh-GELU MLP, final LayerNorm, LM head tied to the token embedding, biases everywhere.

Parameter names follow Hugging Face's GPT2LMHeadModel (transformer.h.0.attn.c_attn...) so
that conversion is a transpose of the Conv1D weights and nothing else.

The model knows nothing of parallelism or precision: DeepSpeed is applied around it by
gpt_dist.engine, and it runs in whatever dtype its parameters are given. For decoding, a
`KVCache` passed to `forward` keeps the keys and values of earlier positions, so each new
token costs one position of compute (gpt_dist.generation).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt_dist.config import ModelConfig, resolve_model_config
from gpt_dist.model.attention import Kernel, Segments, attention_kernel
from gpt_dist.model.loss import IGNORE_INDEX, lm_head_cross_entropy

__all__ = ["GPT", "IGNORE_INDEX", "KVCache"]


class KVCache:
    """Keys and values of the positions decoded so far, preallocated for `max_len` positions.

    `k[layer]`, `v[layer]`: (B, max_len, H_kv, D), H_kv = model.n_kv_head key/value heads; `segment_ids`: (B, max_len), the segment of each
    cached position (0 for left padding, 1 for the real tokens), so later queries can tell
    which keys they may attend to; `length`: positions filled. `GPT.forward` appends to it.
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device, dtype: torch.dtype):
        if max_len > cfg.block_size:
            raise ValueError(f"KV cache of {max_len} positions exceeds model.block_size={cfg.block_size}")
        shape = (batch_size, max_len, cfg.n_kv_head, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.segment_ids = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)
        self.max_len = max_len
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, T, H_kv, D) keys/values after the cached ones; returns all (B, length + T, H_kv, D)."""
        end = self.length + k.shape[1]
        self.k[layer][:, self.length : end] = k
        self.v[layer][:, self.length : end] = v
        return self.k[layer][:, :end], self.v[layer][:, :end]

    def append_segments(self, segment_ids: torch.Tensor) -> torch.Tensor:
        """Store the new tokens' (B, T) segments; returns their (B, 1, T, length + T) attention
        mask over all cached positions: causal, and within the same segment."""
        t = segment_ids.shape[1]
        end = self.length + t
        self.segment_ids[:, self.length : end] = segment_ids
        keys = self.segment_ids[:, :end]
        # The queries are the last T of the `end` positions, so the causal diagonal is shifted.
        causal = torch.ones(t, end, dtype=torch.bool, device=keys.device).tril(diagonal=self.length)
        return ((segment_ids[:, :, None] == keys[:, None, :]) & causal)[:, None]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.kernel: Kernel | None = None  # set by GPT.set_attention_kernel
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, kv_cache: KVCache | None = None, layer: int = 0,
        segments: Segments | None = None,
    ) -> torch.Tensor:
        b, t, c = x.shape  # (B, T, C)
        qkv = self.c_attn(x).view(b, t, 3, self.n_head, c // self.n_head)  # (B, T, 3, H, D)
        q, k, v = qkv.unbind(dim=2)  # each (B, T, H, D)
        if kv_cache is not None:
            k, v = kv_cache.append(layer, k, v)  # (B, past + T, H, D)
        y = self.kernel(q, k, v, mask=mask, segments=segments)  # (B, T, H, D)
        return self.resid_dropout(self.c_proj(y.reshape(b, t, c)))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, kv_cache: KVCache | None = None, layer: int = 0,
        segments: Segments | None = None, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`rope`: the rotary (cos, sin) of the llama family (gpt_dist.model.llama); GPT-2's
        positions are already in `x`, so it takes none."""
        x = x + self.attn(self.ln_1(x), mask, kv_cache, layer, segments)
        return x + self.mlp(self.ln_2(x))


class LMHead(nn.Linear):
    """The output projection (its weight is tied to the token embedding) and, given targets,
    the loss: computed in this module's forward, so an engine that gathers a module's
    parameters around its forward (ZeRO-3) has the weight wherever the loss needs it.

    With vocabulary padding (`padded_vocab_size` > `vocab_size`) the padding rows only give the
    matmul a friendlier shape; a -inf bias keeps their logits out of the softmax inside the
    matmul itself, so the loss never slices (and copies) the logits. That bias is a buffer: no
    gradient, not saved, not in the optimizer.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg.n_embd, cfg.padded_vocab_size, bias=False)
        self.loss_chunk_tokens = cfg.loss_chunk_tokens
        if cfg.padded_vocab_size > cfg.vocab_size:
            pad = torch.zeros(cfg.padded_vocab_size)
            pad[cfg.vocab_size :] = float("-inf")
            del self.bias
            self.register_buffer("bias", pad, persistent=False)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
        """x (..., C) -> logits (..., padded vocab); with targets (N,) and x (N, C): the loss."""
        # Engines cast parameters, not buffers (DeepSpeed's bf16/fp16): follow the activations,
        # on a local copy; the module keeps its fp32 buffer.
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        if targets is None:
            return F.linear(x, self.weight, bias)
        return lm_head_cross_entropy(x, self.weight, bias, targets, reduction, self.loss_chunk_tokens)


class GPT(nn.Module):
    arch = "gpt2"  # the model.arch this class builds; gpt_dist.model.factory picks the class

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = resolve_model_config(cfg)
        if cfg.arch != self.arch:
            raise ValueError(f"{type(self).__name__} is model.arch={self.arch}, got {cfg.arch}; "
                             "build models with gpt_dist.model.factory.build_model")
        self.transformer = nn.ModuleDict(self.trunk(cfg))
        self.lm_head = LMHead(cfg)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # weight tying
        self.init_weights()

    @staticmethod
    def trunk(cfg: ModelConfig) -> dict[str, nn.Module]:
        """Everything before the LM head: embeddings, blocks, final norm (in state-dict order)."""
        return dict(
            wte=nn.Embedding(cfg.padded_vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
            ln_f=nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias),
        )

    def init_weights(self) -> None:
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer): each block adds two
        # contributions to the residual stream, whose variance otherwise grows with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module.bias, nn.Parameter):  # not the LM head's padding mask
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def set_attention_kernel(self, device: torch.device, dtype: torch.dtype) -> None:
        """Choose the attention kernel (model.attn_impl) for activations of `dtype` on `device`,
        once for every layer. The engine set-up calls this; a model never set up chooses on its
        first forward, for the device of its inputs and the dtype it computes in."""
        kernel = attention_kernel(self.config.attn_impl, torch.device(device), dtype)
        for block in self.transformer.h:
            block.attn.kernel = kernel

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameters of the real model: vocab padding rows are not counted."""
        c = self.config
        tables = 1 if c.tie_embeddings else 2  # token embedding, and an untied head
        n = sum(p.numel() for p in self.parameters())  # each tied tensor once
        n -= tables * (c.padded_vocab_size - c.vocab_size) * c.n_embd
        if non_embedding:
            n -= tables * c.vocab_size * c.n_embd
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
        return n

    def embed(self, idx: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Token ids (B, T) and positions (B or 1, T) -> the residual stream (B, T, C), and the
        blocks' rotary tables (none: GPT-2 adds learned positions here)."""
        return self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(position_ids)), None

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        reduction: str = "mean",
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """idx (B, T) token ids.

        Without `targets`: logits (B, T, vocab_size) in the parameters' dtype.
        With `targets` (B, T), IGNORE_INDEX where no loss: the cross-entropy in fp32, the mean
        over counted tokens (`reduction="mean"`), their sum ("sum"), or per token (B, T) ("none").
        `segment_ids` (B, T): tokens attend only to earlier tokens of the same segment
        (packed samples, or 0 for left padding); `position_ids` (B, T) default 0..T-1.
        `kv_cache`: idx continues the cached positions (which it attends to, within the same
        segment) and is appended to the cache; position_ids then default to past..past+T-1.
        """
        b, t = idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        if past + t > self.config.block_size:
            raise ValueError(f"sequence of {past + t} tokens exceeds model.block_size={self.config.block_size}")
        if position_ids is None:
            position_ids = torch.arange(past, past + t, device=idx.device)[None]  # (1, T)
        x, rope = self.embed(idx, position_ids)  # (B, T, C)
        segments, mask = None, None
        if kv_cache is not None:
            if past + t > kv_cache.max_len:
                raise ValueError(f"KV cache holds {kv_cache.max_len} positions; {past} cached + {t} new do not fit")
            # Always an explicit mask: with cached keys the queries are not the first positions.
            seg = segment_ids if segment_ids is not None else torch.zeros(b, t, dtype=torch.long, device=idx.device)
            mask = kv_cache.append_segments(seg)
        elif segment_ids is not None:
            segments = Segments.from_ids(segment_ids)
            if len(segments.bounds) - 1 == b:  # one segment per row: plain causal attention
                segments = None
        if self.transformer.h[0].attn.kernel is None:
            autocast = torch.is_autocast_enabled(idx.device.type)
            dtype = torch.get_autocast_dtype(idx.device.type) if autocast else self.transformer.wte.weight.dtype
            self.set_attention_kernel(idx.device, dtype)
        for i, block in enumerate(self.transformer.h):
            x = block(x, mask, kv_cache, i, segments, rope)
        if kv_cache is not None:
            kv_cache.length = past + t
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x)[..., : self.config.vocab_size]  # padding columns are -inf
        loss = self.lm_head(x.view(b * t, -1), targets.reshape(-1), reduction)
        return loss.view(b, t) if reduction == "none" else loss
