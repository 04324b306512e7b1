"""Sizing a GPT-2 run before booking a cluster: parameters, FLOPs, memory per GPU, time, and
scaling-law suggestions. Pure arithmetic on a ModelConfig; no torch.

    m = load_model_config("gpt2-xl")
    p = make_plan(m, gpus=16, gpu="a100-80gb", tokens=3e10)
    print(format_plan(p))

Conventions, stated once because every figure depends on them:
- Memory is in GiB = 2^30 bytes (as `gpt-dist bench`, nvidia-smi and torch.cuda report it),
  compared with the memory the GPU reports (an "80GB" H100 has 79.6 GiB).
- Parameters, FLOPs per token and GPU peaks come from gpt_dist.model.cost, the functions the
  training engine computes MFU with.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gpt_dist.config import ConfigError, ModelConfig, merge_layers, read_yaml_mapping, resolve_model_config
from gpt_dist.errors import UserError
from gpt_dist.model.cost import flops_per_token, gpu_spec, num_parameters, stored_parameters
from gpt_dist.model.presets import PRESETS

GIB = 2**30


# Learning rates that trained these sizes (GPT-3 paper, Brown et al. 2020, table 2.1, with a
# batch of 0.5M tokens, 1M for 1.3B; nanoGPT reproduces GPT-2 124M with the 6e-4 of the first row).
REFERENCE_LRS = ((125e6, 6.0e-4), (350e6, 3.0e-4), (760e6, 2.5e-4), (1.3e9, 2.0e-4))

# Bytes per parameter for bf16 mixed precision with Adam (ZeRO paper, Rajbhandari et al. 2020):
# bf16 weights, bf16 gradients, and fp32 master weights + Adam m + Adam v.
BF16_PARAM_BYTES = 2
BF16_GRAD_BYTES = 2
OPTIMIZER_BYTES = 12
ZERO_STAGES = (0, 1, 2, 3)

# Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"),
# bytes stored per transformer layer for the backward pass, 16-bit activations, no parallelism:
#   s·b·h·(34 + 5·a·s/h)
# 34·s·b·h are the inputs of the matmuls, LayerNorms, GELU and dropout masks; 5·a·s²·b are
# the attention scores, softmax output and its dropout mask. FlashAttention never stores the
# a·s² matrices (it recomputes them in backward), so with it the term is dropped.
ACT_BYTES_PER_TOKEN_HIDDEN = 34
ACT_BYTES_SCORES = 5

CHINCHILLA_TOKENS_PER_PARAM = 20


# ----------------------------------------------------------------------------- model


def load_model_config(spec: str) -> ModelConfig:
    """A resolved ModelConfig from a preset name or a YAML file.

    The YAML holds a `model:` section (as in a run config) or the model fields at top level.
    Raises ConfigError naming the preset or the file and key at fault.
    """
    if spec in PRESETS:
        return resolve_model_config(ModelConfig(preset=spec))
    path = Path(spec)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        close = difflib.get_close_matches(spec, PRESETS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"--model: '{spec}' is neither a preset{hint} nor a YAML file; "
            f"use one of {', '.join(PRESETS)} or a path to a model.yaml"
        )
    if not path.is_file():
        raise ConfigError(f"{path}: model file not found; give a preset ({', '.join(PRESETS)}) or an existing YAML file")
    data = read_yaml_mapping(path, "model fields (preset, n_layer, n_head, n_embd, ...) or a `model:` section")
    section = data.get("model", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: expected a `model:` mapping (preset, n_layer, n_head, n_embd, ...)")
    # Merged as the `model` section of a run config, so errors name keys as `model.n_head`.
    cfg = merge_layers(_ModelSection, [(str(path), {"model": section})]).model
    try:
        return resolve_model_config(cfg)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


@dataclass
class _ModelSection:
    model: ModelConfig = field(default_factory=ModelConfig)


# ---------------------------------------------------------------------------- memory


def model_state_bytes(params: int, zero_stage: int, dp: int) -> float:
    """Bytes per GPU of weights, gradients and Adam states under ZeRO stage 0-3.

    Stage 1 shards the 12 optimizer bytes, stage 2 also the 2 gradient bytes, stage 3 all
    16, over `dp` data-parallel GPUs.
    """
    w, g, o = BF16_PARAM_BYTES, BF16_GRAD_BYTES, OPTIMIZER_BYTES
    per_param = {0: w + g + o, 1: w + g + o / dp, 2: w + (g + o) / dp, 3: (w + g + o) / dp}[zero_stage]
    return params * per_param


def activation_bytes(m: ModelConfig, seq_len: int, micro_batch: int) -> dict[str, float]:
    """Bytes of activations held for backward for one micro-batch of `micro_batch` × `seq_len`.

    Per layer: s·b·h·(34 + 5·a·s/h) (Korthikanti et al. 2022; the llama family's block:
    s·b·llama_layer_bytes_per_token + the same score term), without the 5·a·s/h score term
    unless `attn_impl` is "math" (every other backend runs FlashAttention on a GPU).
    With activation checkpointing each layer keeps only its 16-bit input (2·s·b·h) and one
    layer is rebuilt in full during backward. The head adds the inputs of ln_f and the LM
    head (4·s·b·h) and the loss 12·s·b·V: the fp32 log-probabilities kept for backward plus
    the fp32 logits gradient and its input gradient at the start of backward.
    """
    s, b, h, a, L, V = seq_len, micro_batch, m.n_embd, m.n_head, m.n_layer, m.vocab_size
    per_layer = s * b * (llama_layer_bytes_per_token(m) if m.arch == "llama" else h * ACT_BYTES_PER_TOKEN_HIDDEN)
    if m.attn_impl == "math":
        per_layer += ACT_BYTES_SCORES * a * s * s * b
    if m.activation_checkpointing:
        layers = L * 2 * s * b * h + per_layer
    else:
        layers = L * per_layer
    head = 4 * s * b * h + 12 * s * b * V
    return {"per_layer": float(per_layer), "layers": float(layers), "head_and_loss": float(head),
            "total": float(layers + head)}


def llama_layer_bytes_per_token(m: ModelConfig) -> int:
    """Bytes one llama block keeps for backward per token, in 16-bit activations, counted as
    Korthikanti et al. count GPT's 34·h, for our block (h = n_embd, kv = n_kv_head·head_dim,
    f = mlp_hidden):
      2 RMSNorms     12h   each keeps its fp32 input (4h) and its 16-bit normalised output (2h)
      attention       6h + 4kv   c_attn input, q, k and v (kv wide each), and the kernel's
                      output, which is c_proj's input (2h each)
      SwiGLU          2h + 8f    c_fc input; gate, up, silu(gate) and c_proj's input (2f each)
      QK-norm         6h + 6kv   the two per-head RMSNorms, the same way (with model.qk_norm)
      dropout         2h         two 1-byte masks (with model.dropout > 0)
    k and v count kv wide: FlashAttention reads the shared heads as they are. The sdpa and
    math kernels keep them repeated to h (4h - 4kv more), counted for attn_impl sdpa / math."""
    h, kv, f = m.n_embd, m.n_kv_head * m.head_dim, m.mlp_hidden
    kv_kept = h if m.attn_impl in ("sdpa", "math") else kv
    n = 12 * h + 6 * h + 4 * kv_kept + 2 * h + 8 * f
    if m.qk_norm:
        n += 6 * h + 6 * kv
    if m.dropout > 0:
        n += 2 * h
    return n


def activation_formula(m: ModelConfig) -> str:
    if m.arch == "llama":
        base = "s*b*(20h + 4kv + 8f" + (" + 6h + 6kv (QK-norm)" if m.qk_norm else "") + ")"
        per_layer = (f"{base} + 5*a*s*s*b (scores)" if m.attn_impl == "math"
                     else f"{base} (FlashAttention: no score term; kv = n_kv_head*head_dim, f = mlp_hidden)")
    elif m.attn_impl == "math":
        per_layer = "s*b*h*(34 + 5*a*s/h)"
    else:
        per_layer = "34*s*b*h (FlashAttention: no 5*a*s/h score term)"
    if m.activation_checkpointing:
        layers = f"L*2*s*b*h + one layer of {per_layer} (activation checkpointing)"
    else:
        layers = f"L * {per_layer}"
    return f"{layers} + 4*s*b*h + 12*s*b*V (loss), bytes; Korthikanti et al. 2022"


def memory_per_gpu(
    m: ModelConfig, seq_len: int, micro_batch: int, gpus: int, gpu: str
) -> dict[str, dict[str, Any]]:
    """Per ZeRO stage ("0".."3"): model_states_gib, activations_gib, total_gib, fits (bool).

    Model states use the stored parameter count (padding rows take memory too). Not counted:
    the CUDA context, NCCL and ZeRO communication buckets, allocator fragmentation; leave a
    few GiB of headroom when `fits` is close.
    """
    capacity = gpu_spec(gpu).memory_gib
    act = activation_bytes(m, seq_len, micro_batch)["total"] / GIB
    params = stored_parameters(m)
    out = {}
    for stage in ZERO_STAGES:
        states = model_state_bytes(params, stage, gpus) / GIB
        total = states + act
        out[str(stage)] = {
            "model_states_gib": round(states, 3),
            "activations_gib": round(act, 3),
            "total_gib": round(total, 3),
            "fits": total <= capacity,
        }
    return out


def largest_micro_batch(m: ModelConfig, seq_len: int, zero_stage: int, gpus: int, gpu: str) -> int:
    """The most sequences per GPU per forward pass that fit under `zero_stage` (0 if none).

    Activations grow linearly with the micro-batch, the model states not at all.
    """
    free = gpu_spec(gpu).memory_gib * GIB - model_state_bytes(stored_parameters(m), zero_stage, gpus)
    return max(0, math.floor(free / activation_bytes(m, seq_len, 1)["total"]))


def choose_zero_stage(memory: dict[str, dict[str, Any]], gpus: int) -> tuple[int | None, str]:
    """The cheapest ZeRO stage that fits, and why; (None, reason) when none does.

    Stages 0, 1 and 2 move the same bytes per step (a gradient all-reduce's worth: stage 1/2
    do it as reduce-scatter + all-gather); stage 3 adds parameter all-gathers in forward and
    backward, 1.5x the traffic (Rajbhandari et al. 2020, sec. 7). So with several GPUs, stage 1
    (optimizer states sharded for free) beats 0, 2 costs the same, 3 is the last resort. On one
    GPU sharding saves nothing: stage 0.
    """
    fits = [int(s) for s, v in memory.items() if v["fits"]]
    if not fits:
        return None, "no ZeRO stage fits"
    if gpus == 1:
        if 0 in fits:
            return 0, "one GPU: ZeRO sharding has nothing to shard over, so stage 0"
        return None, "no ZeRO stage fits"
    same_traffic = [s for s in fits if s in (1, 2)]
    if same_traffic:
        s = same_traffic[0]
        why = ("the optimizer states sharded at no extra traffic over stage 0" if s == 1 else
               "stage 1 does not fit; stage 2 also shards the gradients, at no extra traffic")
        return s, f"ZeRO-{s}: {why}"
    # Memory falls with the stage, so when 0-2 do not fit, 3 is what is left.
    return 3, "ZeRO-3: stages 0-2 do not fit; stage 3 shards the weights too, at 1.5x their traffic"


def batch_layout(global_batch_tokens: float, seq_len: int, micro_batch: int, gpus: int) -> dict[str, Any]:
    """Micro-batch x GPUs x gradient accumulation for a target batch of `global_batch_tokens`.

    The accumulation is the nearest whole number (at least 1), so the global batch is always
    micro_batch x gpus x accumulation sequences, dividing evenly over the GPUs; `exact` says
    whether that equals the target.
    """
    per_step = micro_batch * gpus
    accum = max(1, round(global_batch_tokens / seq_len / per_step))
    sequences = per_step * accum
    return {
        "micro_batch": micro_batch,
        "gpus": gpus,
        "grad_accum": accum,
        "global_batch_sequences": sequences,
        "global_batch_tokens": sequences * seq_len,
        "target_tokens": float(global_batch_tokens),
        "exact": sequences * seq_len == global_batch_tokens,
    }


def reference_lr(params: int) -> float:
    """The GPT-3 paper's learning rate for the size nearest `params` (log scale); 6e-4 for 124M."""
    return min(REFERENCE_LRS, key=lambda r: abs(math.log(r[0] / params)))[1]


_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)
_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_count(text: str) -> float:
    """'10B' -> 1e10, '524288' -> 524288, '3e10', '0.5M', '2T' (decimal: K = 1e3, M = 1e6, B = 1e9)."""
    match = _COUNT.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a positive count; write e.g. 10B, 300M, 3e10 or 524288")
    return float(match.group(1)) * _SUFFIX[match.group(2).lower()]


def format_duration(seconds: float) -> str:
    """Minutes under an hour, hours under a day, days beyond."""
    if seconds < 3600:
        return f"{seconds / 60:.1f} minutes"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.2f} days"


# ----------------------------------------------------------------------- scaling laws


def chinchilla_tokens(params: int) -> float:
    """Compute-optimal tokens for `params` parameters (Hoffmann et al. 2022): 20 per parameter."""
    return float(CHINCHILLA_TOKENS_PER_PARAM * params)


def deepseek_hparams(m: ModelConfig, seq_len: int, tokens: float) -> dict[str, float]:
    """DeepSeek-LLM (arXiv 2401.02954) optimal learning rate and batch size for this compute.

    M = 72·n_layer·d² + 6·n_layer·d·seq (non-embedding FLOPs per token), C = M·tokens,
    lr = 0.3118·C^-0.125, batch_tokens = 0.2920·C^0.3271. Fitted on DeepSeek's data and
    their multi-step schedule; a starting point, not a guarantee.
    """
    M = 72.0 * m.n_layer * m.n_embd**2 + 6.0 * m.n_layer * m.n_embd * seq_len
    C = M * tokens
    batch_tokens = 0.2920 * C**0.3271
    return {
        "M": M,
        "compute_flops": C,
        "lr": 0.3118 * C**-0.125,
        "batch_tokens": batch_tokens,
        "batch_sequences": batch_tokens / seq_len,
    }


# -------------------------------------------------------------------------- warnings


def shape_warnings(m: ModelConfig) -> list[str]:
    """Shapes that run, but waste GPU time."""
    out = []
    hd = m.head_dim
    options = [f"n_head={m.n_embd // k} (head dim {k})" for k in (64, 128) if m.n_embd % k == 0]
    fix = f"; e.g. {' or '.join(options)}" if options else ""
    if hd % 8 != 0:
        out.append(
            f"head dimension {hd} (n_embd {m.n_embd} / n_head {m.n_head}) is not a multiple of 8: "
            f"FlashAttention cannot run it and tensor cores are under-used; use a head dimension of 64 or 128{fix}"
        )
    if hd < 64:
        out.append(
            f"head dimension {hd} is below 64: attention matmuls this thin leave tensor cores idle; "
            f"use fewer heads{fix}"
        )
    if hd > 256:
        out.append(f"head dimension {hd} is above 256, which FlashAttention-2 does not support; use more heads")
    if m.n_embd % 64 != 0:
        out.append(f"n_embd {m.n_embd} is not a multiple of 64: matmul tiles are partly empty; round it to a multiple of 64")
    if m.padded_vocab_size % 64 != 0:
        out.append(
            f"vocabulary of {m.padded_vocab_size} is not padded to a multiple of 64: the LM-head matmul, "
            f"the largest in small models, runs slower; set model.vocab_pad_multiple: 128 (results do not change)"
        )
    return out


# ------------------------------------------------------------------------------ plan


def make_plan(
    m: ModelConfig,
    *,
    seq_len: int | None = None,
    tokens: float | None = None,
    gpus: int = 8,
    gpu: str = "h100-80gb",
    zero_stage: int | None = None,
    micro_batch: int = 8,
    global_batch_tokens: float | None = None,
    activation_checkpointing: bool | None = None,
    mfu: float = 0.4,
) -> dict[str, Any]:
    """Every figure of `gpt-dist plan` as a JSON-ready dict. `m` must be resolved.

    `tokens` defaults to the Chinchilla budget (20 × params); `seq_len` to m.block_size;
    `zero_stage` None picks the cheapest stage that fits (`choose_zero_stage`);
    `global_batch_tokens` None takes DeepSeek-LLM's suggestion; `activation_checkpointing`
    None keeps the model config's setting.
    """
    seq_len = m.block_size if seq_len is None else seq_len
    if not 0 < seq_len <= m.block_size:
        raise UserError(f"--seq-len: {seq_len} must be in 1..model.block_size ({m.block_size}); lower it or raise block_size")
    if gpus < 1:
        raise UserError(f"--gpus: {gpus} must be at least 1")
    if zero_stage is not None and zero_stage not in ZERO_STAGES:
        raise UserError(f"--zero-stage: {zero_stage} is not 0, 1, 2 or 3")
    if micro_batch < 1:
        raise UserError(f"--micro-batch: {micro_batch} must be at least 1 sequence")
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu: {mfu} must be in (0, 1]; 0.3-0.5 is typical for GPT-2 sizes")
    if tokens is not None and not tokens > 0:
        raise UserError(f"--tokens: {tokens} must be positive, e.g. 3e10")
    if global_batch_tokens is not None and not global_batch_tokens >= seq_len:
        raise UserError(f"--global-batch-tokens: {global_batch_tokens:g} must be at least one sequence ({seq_len} tokens)")
    if activation_checkpointing is not None:
        m = replace(m, activation_checkpointing=activation_checkpointing)
    spec = gpu_spec(gpu)
    gpu = gpu.lower()

    params = num_parameters(m)
    fpt = flops_per_token(m, seq_len)
    chin = chinchilla_tokens(params)
    tokens = chin if tokens is None else float(tokens)
    tps = gpus * mfu * spec.peak_flops / fpt
    act = activation_bytes(m, seq_len, micro_batch)
    memory = memory_per_gpu(m, seq_len, micro_batch, gpus, gpu)
    deepseek = deepseek_hparams(m, seq_len, tokens)

    warnings = shape_warnings(m)
    if zero_stage is None:
        chosen, reason = choose_zero_stage(memory, gpus)
        stage = 3 if chosen is None else chosen  # for the figures below when nothing fits
    else:
        chosen = stage = zero_stage
        reason = "as given by --zero-stage"
    fitting_micro = largest_micro_batch(m, seq_len, stage, gpus, gpu)
    if chosen is None or not memory[str(stage)]["fits"]:
        fixes = []
        alternative, _ = choose_zero_stage(memory, gpus)
        if alternative is not None:
            fixes.append(f"ZeRO stage {alternative} (it fits)")
        if fitting_micro >= 1:
            fixes.append(f"--micro-batch {fitting_micro} (the largest that fits with ZeRO stage {stage})")
        if not m.activation_checkpointing:
            fixes.append("--activation-checkpointing")
        fixes.append("more GPUs")
        warnings.append(
            f"ZeRO stage {stage} needs {memory[str(stage)]['total_gib']:.1f} GiB per GPU, more than "
            f"the {spec.memory_gib:.1f} GiB of one {gpu}; use {', '.join(fixes[:-1])} or {fixes[-1]}"
        )
    batch = batch_layout(deepseek["batch_tokens"] if global_batch_tokens is None else global_batch_tokens,
                         seq_len, micro_batch, gpus)
    batch["source"] = "DeepSeek-LLM's suggestion" if global_batch_tokens is None else "--global-batch-tokens"
    seconds = tokens / tps

    return {
        "model": {
            "preset": m.preset, "n_layer": m.n_layer, "n_head": m.n_head, "n_embd": m.n_embd,
            "head_dim": m.head_dim, "block_size": m.block_size, "vocab_size": m.vocab_size,
            "padded_vocab_size": m.padded_vocab_size, "attn_impl": m.attn_impl,
            "activation_checkpointing": m.activation_checkpointing,
        },
        "seq_len": seq_len,
        "micro_batch": micro_batch,
        "gpus": gpus,
        "gpu": gpu,
        "gpu_memory_gib": spec.memory_gib,
        "peak_flops_per_gpu": spec.peak_flops,
        "mfu": mfu,
        "zero_stage": stage,
        "zero_stage_reason": reason,
        "largest_micro_batch": fitting_micro,
        "batch": batch,
        "optimizer_steps": tokens / batch["global_batch_tokens"],
        "params": params,
        "non_embedding_params": num_parameters(m, non_embedding=True),
        "stored_params": stored_parameters(m),
        "flops_per_token": fpt,
        "flops_per_token_formula": "6*N + 12*L*d*T, N = " + (
            "params - position embedding (nanoGPT/PaLM)" if m.arch != "llama"
            else "params (the tied embedding is the head's matmul)" if m.tie_embeddings
            else "params - token embedding (a lookup; the untied head is the matmul)"),
        "memory_per_gpu_gib": memory,
        "activations_gib": {
            "per_layer": act["per_layer"] / GIB,
            "layers": act["layers"] / GIB,
            "head_and_loss": act["head_and_loss"] / GIB,
            "total": act["total"] / GIB,
            "formula": activation_formula(m),
        },
        "tokens": tokens,
        "tokens_per_second": tps,
        "train_hours": seconds / 3600,
        "train_days": seconds / 86400,
        "chinchilla_tokens": chin,
        "deepseek": deepseek,
        "reference_lr": reference_lr(params),
        "warnings": warnings,
    }


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def format_plan(p: dict[str, Any]) -> str:
    """The human-readable table printed by `gpt-dist plan`."""
    mo = p["model"]
    name = mo["preset"] or "custom"
    ds = p["deepseek"]
    a = p["activations_gib"]
    b = p["batch"]
    ckpt = "on" if mo["activation_checkpointing"] else "off (--activation-checkpointing to trade compute for memory)"
    lines = [
        f"model            {name}: {mo['n_layer']} layers, {mo['n_head']} heads x {mo['head_dim']}, "
        f"d_model {mo['n_embd']}, vocab {mo['vocab_size']} (padded {mo['padded_vocab_size']}), seq {p['seq_len']}",
        f"params           {p['params']:,} ({_si(p['params'])})",
        f"non-embedding    {p['non_embedding_params']:,} ({_si(p['non_embedding_params'])}, without token/position embeddings)",
        f"FLOPs/token      {p['flops_per_token']:.4g}  ({p['flops_per_token_formula']})",
        "",
        f"memory per GPU   {p['gpus']} x {p['gpu']} ({p['gpu_memory_gib']:.1f} GiB), micro-batch {p['micro_batch']} x "
        f"{p['seq_len']}, activation checkpointing {ckpt}",
        f"  activations    {a['total']:.2f} GiB = {a['layers']:.2f} layers ({a['per_layer']:.3f}/layer) "
        f"+ {a['head_and_loss']:.2f} head/loss",
        f"                 {a['formula']}",
        f"  model states   2 (bf16 weights) + 2 (bf16 grads) + 12 (fp32 master, Adam m, v) bytes x {p['stored_params']:,} stored params",
        f"  {'ZeRO':<6}{'states GiB':>12}{'activ. GiB':>12}{'total GiB':>12}  fits",
    ]
    for stage, v in p["memory_per_gpu_gib"].items():
        mark = " <" if int(stage) == p["zero_stage"] else ""
        lines.append(
            f"  {stage:<6}{v['model_states_gib']:>12.2f}{v['activations_gib']:>12.2f}{v['total_gib']:>12.2f}  "
            f"{'yes' if v['fits'] else 'NO'}{mark}"
        )
    lines += [
        f"  ZeRO stage     {p['zero_stage']} ({p['zero_stage_reason']})",
        f"  micro-batch    {p['micro_batch']} per GPU; the largest that fits with ZeRO stage {p['zero_stage']}: "
        f"{p['largest_micro_batch']}",
        "",
        f"batch            {b['micro_batch']} micro-batch x {b['gpus']} GPUs x {b['grad_accum']} accumulation steps = "
        f"{b['global_batch_sequences']:,} sequences = {b['global_batch_tokens']:,} tokens per optimizer step",
        f"                 ({b['source']}: {b['target_tokens']:,.0f} tokens"
        f"{'' if b['exact'] else ', rounded to whole accumulation steps'}); {p['optimizer_steps']:,.0f} steps",
        f"  as config      train: {{global_batch_tokens: {b['global_batch_tokens']}, micro_batch_size: "
        f"{b['micro_batch']}, seq_len: {p['seq_len']}}}  engine: {{zero_stage: {p['zero_stage']}}}",
        "",
        f"throughput       {p['tokens_per_second']:,.0f} tokens/s at MFU {p['mfu']:g} "
        f"({p['peak_flops_per_gpu'] / 1e12:g} TFLOP/s bf16 peak per GPU)",
        f"training         {_si(p['tokens'])} tokens in {format_duration(p['train_hours'] * 3600)}",
        f"chinchilla       {_si(p['chinchilla_tokens'])} tokens (20 x params)",
        f"learning rate    {p['reference_lr']:.1e}: what GPT-3 used at this size (6e-4 for 124M, as GPT-2/nanoGPT runs use)",
        f"DeepSeek-LLM     C = {ds['compute_flops']:.3g} FLOPs (M = {ds['M']:.4g}/token): lr {ds['lr']:.3g}, "
        f"batch {_si(ds['batch_tokens'])} tokens = {ds['batch_sequences']:.0f} sequences",
        "                 (a fit to DeepSeek's data and multi-step schedule, mostly at larger scales: at GPT-2 sizes it "
        "runs above the tried values; sweep it, do not trust it)",
    ]
    for w in p["warnings"]:
        lines.append(f"WARNING: {w}")
    return "\n".join(lines)
