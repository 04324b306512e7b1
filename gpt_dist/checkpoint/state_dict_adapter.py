"""Our GPT's weights <-> Hugging Face GPT2LMHeadModel's: names, transposes, vocab padding, config.

Both models use the same parameter names (transformer.h.N.attn.c_attn.weight, ...). They differ in:
- HF's Conv1D stores a weight as (in, out); our nn.Linear as (out, in). The four projection
  weights (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are transposed, nothing else.
- Our token embedding may carry padding rows up to `padded_vocab_size`; HF has `vocab_size`.
- HF directories in the wild name keys with or without the "transformer." prefix (OpenAI's
  own upload has "h.0.attn..."), may store the tied lm_head.weight or not, and old ones carry
  the causal-mask buffers attn.bias / attn.masked_bias, which are not weights.

The "canonical" state dict that crosses this module's boundary is in our naming, fp32-able,
with exactly `vocab_size` embedding rows and no lm_head.weight (it is the embedding).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from gpt_dist.config import ConfigError, ModelConfig, resolve_model_config
from gpt_dist.errors import CheckpointError

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
WTE = "transformer.wte.weight"
LM_HEAD = "lm_head.weight"
# Our GPT's activation is tanh-approximated GELU; these HF names compute the same function.
HF_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
_HF_MASK_BUFFER = re.compile(r"(^|\.)h\.\d+\.attn\.(bias|masked_bias)$")


def is_conv1d_weight(name: str) -> bool:
    return name.endswith(CONV1D_WEIGHTS)


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of GPT(cfg) in our naming -> its shape, with `vocab_size` embedding rows and
    without lm_head.weight (llama family: gpt_dist.checkpoint.llama_adapter, with it when untied).
    (Written out rather than read off a meta-device model: that would pull in torch's compiler
    stack, seconds of import; a test checks the two agree.)"""
    if cfg.arch == "llama":
        from gpt_dist.checkpoint import llama_adapter

        return llama_adapter.param_shapes(cfg)
    c = cfg.n_embd
    shapes = {WTE: (cfg.vocab_size, c), "transformer.wpe.weight": (cfg.block_size, c)}
    per_block = {
        "ln_1.weight": (c,), "ln_1.bias": (c,),
        "attn.c_attn.weight": (3 * c, c), "attn.c_attn.bias": (3 * c,),
        "attn.c_proj.weight": (c, c), "attn.c_proj.bias": (c,),
        "ln_2.weight": (c,), "ln_2.bias": (c,),
        "mlp.c_fc.weight": (4 * c, c), "mlp.c_fc.bias": (4 * c,),
        "mlp.c_proj.weight": (c, 4 * c), "mlp.c_proj.bias": (c,),
    }  # fmt: skip
    for i in range(cfg.n_layer):
        for name, shape in per_block.items():
            if cfg.bias or not name.endswith(".bias"):
                shapes[f"transformer.h.{i}.{name}"] = shape
    shapes["transformer.ln_f.weight"] = (c,)
    if cfg.bias:
        shapes["transformer.ln_f.bias"] = (c,)
    return shapes


def pad_vocab(state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Canonical state dict -> the one `GPT(cfg).load_state_dict` takes: the embedding padded
    with zero rows to `cfg.padded_vocab_size`, and lm_head.weight the same tensor as it (an
    untied head padded the same way)."""
    out = dict(state)

    def padded(t: torch.Tensor) -> torch.Tensor:
        pad = cfg.padded_vocab_size - t.shape[0]
        return torch.cat([t, t.new_zeros(pad, t.shape[1])]) if pad > 0 else t

    out[WTE] = padded(out[WTE])
    out[LM_HEAD] = out[WTE] if cfg.tie_embeddings else padded(out[LM_HEAD])
    return out


def check_shapes(shapes: Mapping[str, tuple[int, ...]], cfg: ModelConfig, where: str, fix: str) -> None:
    """Raise CheckpointError unless `shapes` (our naming; lm_head.weight ignored; the embedding
    with vocab_size or padded_vocab_size rows) are exactly the weights of GPT(cfg).

    `where` names the file holding the config, `fix` says what to do about a mismatch.
    """
    expected = param_shapes(cfg)
    got = {k: tuple(v) for k, v in shapes.items() if k != LM_HEAD or LM_HEAD in expected}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        layer_keys = [k for k in missing + unexpected if ".h." in k]
        field = "model.n_layer" if layer_keys and len(layer_keys) == len(missing + unexpected) else "model"
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            detail.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        raise CheckpointError(
            f"{where}: {field} (n_layer={cfg.n_layer}) does not match the weights ({'; '.join(detail)}); {fix}"
        )
    for name, shape in expected.items():
        ok = got[name] == shape or (name in (WTE, LM_HEAD) and got[name] == (cfg.padded_vocab_size, cfg.n_embd))
        if not ok:
            raise CheckpointError(
                f"{where}: {_field_at_fault(name, got[name], shape)} does not match the weights: {name} has shape "
                f"{got[name]}, but the config (n_layer={cfg.n_layer}, n_head={cfg.n_head}, n_embd={cfg.n_embd}, "
                f"block_size={cfg.block_size}, vocab_size={cfg.vocab_size}) implies {shape}; {fix}"
            )


def _field_at_fault(name: str, got: tuple[int, ...], want: tuple[int, ...]) -> str:
    """The config field a shape mismatch points to (embedding rows: vocab/positions; else width)."""
    if len(got) == 2 and got[1:] == want[1:] and name in (WTE, "transformer.wpe.weight"):
        return "model.vocab_size" if name == WTE else "model.block_size"
    return "model.n_embd"


# ----------------------------------------------------------------------------- to HF


def to_hf_tensor(name: str, tensor: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """One weight in our layout -> HF's (same name): Conv1D transpose, vocab padding sliced off."""
    if name == WTE and tensor.shape[0] != cfg.vocab_size:
        tensor = tensor[: cfg.vocab_size]
    if is_conv1d_weight(name):
        tensor = tensor.t()
    return tensor


def hf_shape(name: str, shape: tuple[int, ...], cfg: ModelConfig) -> tuple[int, ...]:
    """The shape `to_hf_tensor` gives a weight of our `shape`."""
    if name == WTE:
        return (cfg.vocab_size, shape[1])
    return tuple(shape[::-1]) if is_conv1d_weight(name) else tuple(shape)


def hf_config(cfg: ModelConfig, *, eot_id: int | None, dtype: torch.dtype) -> Any:
    """The transformers.GPT2Config for `cfg` (architectures = GPT2LMHeadModel)."""
    from transformers import GPT2Config

    if not cfg.bias:
        raise CheckpointError(
            "model.bias=false: Hugging Face's GPT-2 always has biases, so this model has no GPT2LMHeadModel "
            "equivalent; export needs a model trained with model.bias: true"
        )
    conf = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=None,  # 4 * n_embd, as ours
        activation_function="gelu_new",
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        layer_norm_epsilon=1e-5,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        tie_word_embeddings=True,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        architectures=["GPT2LMHeadModel"],
    )
    conf.dtype = dtype
    return conf


# --------------------------------------------------------------------------- from HF


def model_config_from_hf(conf: Mapping[str, Any], config_file: Path) -> ModelConfig:
    """ModelConfig for a Hugging Face GPT-2 config.json (as a dict); anything our GPT cannot
    reproduce exactly is a CheckpointError naming the field."""

    def need(cond: bool, field: str, problem: str) -> None:
        if not cond:
            raise CheckpointError(
                f"{config_file}: {field}: {problem}; only GPT-2 (GPT2LMHeadModel) and Llama (LlamaForCausalLM) "
                "models can be imported"
            )

    model_type = conf.get("model_type")
    need(model_type == "gpt2", "model_type", f"'{model_type}' is not 'gpt2'")
    archs = conf.get("architectures") or ["GPT2LMHeadModel"]
    need(
        any(a in ("GPT2LMHeadModel", "GPT2Model") for a in archs),
        "architectures",
        f"{archs} is not a GPT-2 language model",
    )
    act = conf.get("activation_function", "gelu_new")
    need(
        act in HF_TANH_GELU, "activation_function", f"'{act}' differs from GPT-2's tanh GELU ({'/'.join(HF_TANH_GELU)})"
    )
    n_embd = conf.get("n_embd", 768)
    n_inner = conf.get("n_inner")
    need(n_inner in (None, 4 * n_embd), "n_inner", f"{n_inner} is not 4 * n_embd = {4 * n_embd}")
    eps = conf.get("layer_norm_epsilon", 1e-5)
    need(abs(eps - 1e-5) < 1e-12, "layer_norm_epsilon", f"{eps} differs from GPT-2's 1e-5")
    need(conf.get("scale_attn_weights", True) is True, "scale_attn_weights", "false changes the attention")
    need(
        not conf.get("scale_attn_by_inverse_layer_idx", False),
        "scale_attn_by_inverse_layer_idx",
        "true changes the attention",
    )
    need(not conf.get("add_cross_attention", False), "add_cross_attention", "cross-attention layers are not GPT-2")
    cfg = ModelConfig(
        n_layer=conf.get("n_layer", 12),
        n_head=conf.get("n_head", 12),
        n_embd=n_embd,
        block_size=conf.get("n_positions", 1024),
        vocab_size=conf.get("vocab_size", 50257),
        dropout=float(conf.get("resid_pdrop", 0.0)),
    )
    try:
        return resolve_model_config(cfg)
    except ConfigError as e:  # an impossible shape (n_embd % n_head, ...)
        raise CheckpointError(f"{config_file}: {e}") from None


def our_name(hf_name: str) -> str | None:
    """HF key -> our key, or None for keys that are not weights (causal-mask buffers)."""
    if _HF_MASK_BUFFER.search(hf_name):
        return None
    if hf_name == LM_HEAD:
        return LM_HEAD
    return hf_name if hf_name.startswith("transformer.") else f"transformer.{hf_name}"


def from_hf_tensor(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """One HF weight (already renamed with `our_name`) -> our layout."""
    return tensor.t() if is_conv1d_weight(name) else tensor
