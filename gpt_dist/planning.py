"""Sizing a GPT-2 run before booking a cluster: parameters, FLOPs, memory per GPU, time, and
scaling-law suggestions. Pure arithmetic on a ModelConfig; no torch.

    m = load_model_config("gpt2-xl")
    p = make_plan(m, gpus=16, gpu="a100-80gb", tokens=3e10)
    print(format_plan(p))

Conventions, stated once because every figure depends on them:
- Memory is in GB = 1e9 bytes, compared with the GPU's nominal capacity (40/80/80/141 GB).
- `flops_per_token` is the PaLM (Chowdhery et al. 2022, app. B) / nanoGPT estimate
  6·N + 12·L·d·T, with N = every parameter except the position embedding (as nanoGPT's
  `estimate_mfu` does: the tied token embedding is the LM-head matmul, the position
  embedding is only a lookup). The training engine computes MFU with these same functions.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt_dist.config import ConfigError, ModelConfig, merge_layers, read_yaml_mapping, resolve_model_config
from gpt_dist.errors import UserError
from gpt_dist.model.presets import PRESETS

GB = 1e9


@dataclass(frozen=True)
class GPUSpec:
    peak_flops: float  # dense bf16 tensor-core FLOP/s
    memory_gb: float  # nominal HBM capacity, GB


GPUS: dict[str, GPUSpec] = {
    "a100-40gb": GPUSpec(peak_flops=312e12, memory_gb=40),
    "a100-80gb": GPUSpec(peak_flops=312e12, memory_gb=80),
    "h100-80gb": GPUSpec(peak_flops=989e12, memory_gb=80),  # SXM
    "h200": GPUSpec(peak_flops=989e12, memory_gb=141),  # SXM
}

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


def num_parameters(m: ModelConfig, non_embedding: bool = False) -> int:
    """Parameters of the real model, counted as GPT.num_parameters() counts them.

    Vocab padding rows are not parameters of the real model. The LM head is tied to the
    token embedding, so it adds nothing. `non_embedding=True` follows Kaplan et al. 2020:
    the token and position embeddings are left out.
    """
    d, L = m.n_embd, m.n_layer
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
    n = num_parameters(m) - m.block_size * m.n_embd
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

    Per layer: s·b·h·(34 + 5·a·s/h) (Korthikanti et al. 2022), without the 5·a·s/h score
    term unless `attn_impl` is "math" (every other backend runs FlashAttention on a GPU).
    With activation checkpointing each layer keeps only its 16-bit input (2·s·b·h) and one
    layer is rebuilt in full during backward. The head adds the inputs of ln_f and the LM
    head (4·s·b·h) and the loss 12·s·b·V: the fp32 log-probabilities kept for backward plus
    the fp32 logits gradient and its input gradient at the start of backward.
    """
    s, b, h, a, L, V = seq_len, micro_batch, m.n_embd, m.n_head, m.n_layer, m.vocab_size
    per_layer = s * b * h * ACT_BYTES_PER_TOKEN_HIDDEN
    if m.attn_impl == "math":
        per_layer += ACT_BYTES_SCORES * a * s * s * b
    if m.activation_checkpointing:
        layers = L * 2 * s * b * h + per_layer
    else:
        layers = L * per_layer
    head = 4 * s * b * h + 12 * s * b * V
    return {"per_layer": float(per_layer), "layers": float(layers), "head_and_loss": float(head),
            "total": float(layers + head)}


def activation_formula(m: ModelConfig) -> str:
    per_layer = "s*b*h*(34 + 5*a*s/h)" if m.attn_impl == "math" else "34*s*b*h (FlashAttention: no 5*a*s/h score term)"
    if m.activation_checkpointing:
        layers = f"L*2*s*b*h + one layer of {per_layer} (activation checkpointing)"
    else:
        layers = f"L * {per_layer}"
    return f"{layers} + 4*s*b*h + 12*s*b*V (loss), bytes; Korthikanti et al. 2022"


def memory_per_gpu(
    m: ModelConfig, seq_len: int, micro_batch: int, gpus: int, gpu: str
) -> dict[str, dict[str, Any]]:
    """Per ZeRO stage ("0".."3"): model_states_gb, activations_gb, total_gb, fits (bool).

    Model states use the stored parameter count (padding rows take memory too). Not counted:
    the CUDA context, NCCL and ZeRO communication buckets, allocator fragmentation; leave a
    few GB of headroom when `fits` is close.
    """
    capacity = gpu_spec(gpu).memory_gb
    act = activation_bytes(m, seq_len, micro_batch)["total"] / GB
    params = stored_parameters(m)
    out = {}
    for stage in ZERO_STAGES:
        states = model_state_bytes(params, stage, gpus) / GB
        total = states + act
        out[str(stage)] = {
            "model_states_gb": round(states, 3),
            "activations_gb": round(act, 3),
            "total_gb": round(total, 3),
            "fits": total <= capacity,
        }
    return out


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
    zero_stage: int = 3,
    micro_batch: int = 8,
    mfu: float = 0.4,
) -> dict[str, Any]:
    """Every figure of `gpt-dist plan` as a JSON-ready dict. `m` must be resolved.

    `tokens` defaults to the Chinchilla budget (20 × params); `seq_len` to m.block_size.
    """
    seq_len = m.block_size if seq_len is None else seq_len
    if not 0 < seq_len <= m.block_size:
        raise UserError(f"--seq-len: {seq_len} must be in 1..model.block_size ({m.block_size}); lower it or raise block_size")
    if gpus < 1:
        raise UserError(f"--gpus: {gpus} must be at least 1")
    if zero_stage not in ZERO_STAGES:
        raise UserError(f"--zero-stage: {zero_stage} is not 0, 1, 2 or 3")
    if micro_batch < 1:
        raise UserError(f"--micro-batch: {micro_batch} must be at least 1 sequence")
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu: {mfu} must be in (0, 1]; 0.3-0.5 is typical for GPT-2 sizes")
    if tokens is not None and not tokens > 0:
        raise UserError(f"--tokens: {tokens} must be positive, e.g. 3e10")
    spec = gpu_spec(gpu)
    gpu = gpu.lower()

    params = num_parameters(m)
    fpt = flops_per_token(m, seq_len)
    chin = chinchilla_tokens(params)
    tokens = chin if tokens is None else float(tokens)
    tps = gpus * mfu * spec.peak_flops / fpt
    act = activation_bytes(m, seq_len, micro_batch)
    memory = memory_per_gpu(m, seq_len, micro_batch, gpus, gpu)

    warnings = shape_warnings(m)
    if not memory[str(zero_stage)]["fits"]:
        fitting = [s for s, v in memory.items() if v["fits"]]
        alt = f"ZeRO stage {fitting[0]}, " if fitting else ""
        warnings.append(
            f"ZeRO stage {zero_stage} needs {memory[str(zero_stage)]['total_gb']:.1f} GB per GPU, more than "
            f"the {spec.memory_gb:g} GB of one {gpu}; use {alt}a smaller --micro-batch, "
            f"activation checkpointing or more GPUs"
        )

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
        "gpu_memory_gb": spec.memory_gb,
        "peak_flops_per_gpu": spec.peak_flops,
        "mfu": mfu,
        "zero_stage": zero_stage,
        "params": params,
        "non_embedding_params": num_parameters(m, non_embedding=True),
        "stored_params": stored_parameters(m),
        "flops_per_token": fpt,
        "flops_per_token_formula": "6*N + 12*L*d*T, N = params - position embedding (nanoGPT/PaLM)",
        "memory_per_gpu_gb": memory,
        "activations_gb": {
            "per_layer": act["per_layer"] / GB,
            "layers": act["layers"] / GB,
            "head_and_loss": act["head_and_loss"] / GB,
            "total": act["total"] / GB,
            "formula": activation_formula(m),
        },
        "tokens": tokens,
        "tokens_per_second": tps,
        "train_days": tokens / tps / 86400,
        "chinchilla_tokens": chin,
        "deepseek": deepseek_hparams(m, seq_len, tokens),
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
    a = p["activations_gb"]
    lines = [
        f"model            {name}: {mo['n_layer']} layers, {mo['n_head']} heads x {mo['head_dim']}, "
        f"d_model {mo['n_embd']}, vocab {mo['vocab_size']} (padded {mo['padded_vocab_size']}), seq {p['seq_len']}",
        f"params           {p['params']:,} ({_si(p['params'])})",
        f"non-embedding    {p['non_embedding_params']:,} ({_si(p['non_embedding_params'])}, without token/position embeddings)",
        f"FLOPs/token      {p['flops_per_token']:.4g}  ({p['flops_per_token_formula']})",
        "",
        f"memory per GPU   {p['gpus']} x {p['gpu']} ({p['gpu_memory_gb']:g} GB), micro-batch {p['micro_batch']} x {p['seq_len']}",
        f"  activations    {a['total']:.2f} GB = {a['layers']:.2f} layers ({a['per_layer']:.3f}/layer) "
        f"+ {a['head_and_loss']:.2f} head/loss",
        f"                 {a['formula']}",
        f"  model states   2 (bf16 weights) + 2 (bf16 grads) + 12 (fp32 master, Adam m, v) bytes x {p['stored_params']:,} stored params",
        f"  {'ZeRO':<6}{'states GB':>12}{'activ. GB':>12}{'total GB':>12}  fits",
    ]
    for stage, v in p["memory_per_gpu_gb"].items():
        mark = " <" if int(stage) == p["zero_stage"] else ""
        lines.append(
            f"  {stage:<6}{v['model_states_gb']:>12.2f}{v['activations_gb']:>12.2f}{v['total_gb']:>12.2f}  "
            f"{'yes' if v['fits'] else 'NO'}{mark}"
        )
    lines += [
        "",
        f"throughput       {p['tokens_per_second']:,.0f} tokens/s at MFU {p['mfu']:g} "
        f"({p['peak_flops_per_gpu'] / 1e12:g} TFLOP/s bf16 peak per GPU)",
        f"training         {_si(p['tokens'])} tokens in {p['train_days']:.2f} days",
        f"chinchilla       {_si(p['chinchilla_tokens'])} tokens (20 x params)",
        f"DeepSeek-LLM     C = {ds['compute_flops']:.3g} FLOPs (M = {ds['M']:.4g}/token): lr {ds['lr']:.3g}, "
        f"batch {_si(ds['batch_tokens'])} tokens = {ds['batch_sequences']:.0f} sequences",
    ]
    for w in p["warnings"]:
        lines.append(f"WARNING: {w}")
    return "\n".join(lines)
