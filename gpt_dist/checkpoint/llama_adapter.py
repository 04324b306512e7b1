"""Our llama-family weights (gpt_dist.model.llama) <-> Hugging Face LlamaForCausalLM's, or
Qwen3ForCausalLM's for a model with QK-norm.

Qwen3 is Llama plus one RMSNorm over each head's dim on the queries and one on the keys,
applied after the projection and before the rotary embedding, with the model's RMSNorm eps:
exactly our model.qk_norm (attn.q_norm / attn.k_norm). So a qk_norm model exports as
Qwen3ForCausalLM (sliding-window attention off) and a Qwen3 directory imports as one.

The layouts agree element for element (nn.Linear (out, in) on both sides, rotary embeddings
on the two halves of each head), so conversion only renames and splits: our fused
attn.c_attn is HF's q_proj, k_proj, v_proj stacked by rows, our fused mlp.c_fc is gate_proj
then up_proj. `PIECES` says, per weight of ours, which HF tensors its rows are, in order; both
directions are read off it. The embedding (and an untied head) lose the vocabulary padding rows.

The canonical state dict is as for GPT-2 (gpt_dist.checkpoint.state_dict_adapter): our naming,
`vocab_size` embedding rows, lm_head.weight only when the head is untied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from gpt_dist.checkpoint.lazy_tensor import LazyTensor
from gpt_dist.checkpoint.state_dict_adapter import LM_HEAD, WTE
from gpt_dist.config import ConfigError, ModelConfig, resolve_model_config
from gpt_dist.errors import CheckpointError


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of Llama(cfg) in our naming -> its shape (`vocab_size` embedding rows;
    lm_head.weight only when untied)."""
    c, d, f = cfg.n_embd, cfg.head_dim, cfg.mlp_hidden
    shapes = {WTE: (cfg.vocab_size, c)}
    per_block = {
        "ln_1.weight": (c,),
        "attn.c_attn.weight": ((cfg.n_head + 2 * cfg.n_kv_head) * d, c),
        "attn.c_proj.weight": (c, c),
        "ln_2.weight": (c,),
        "mlp.c_fc.weight": (2 * f, c),
        "mlp.c_proj.weight": (c, f),
    }
    if cfg.qk_norm:
        per_block.update({"attn.q_norm.weight": (d,), "attn.k_norm.weight": (d,)})
    for i in range(cfg.n_layer):
        shapes.update({f"transformer.h.{i}.{name}": shape for name, shape in per_block.items()})
    shapes["transformer.ln_f.weight"] = (c,)
    if not cfg.tie_embeddings:
        shapes[LM_HEAD] = (cfg.vocab_size, c)
    return shapes


def pieces(cfg: ModelConfig) -> dict[str, list[tuple[str, int]]]:
    """Our weight name -> [(HF name, rows)], the HF tensors its leading rows are, in order."""
    c, d, f, v = cfg.n_embd, cfg.head_dim, cfg.mlp_hidden, cfg.vocab_size
    out = {WTE: [("model.embed_tokens.weight", v)]}
    for i in range(cfg.n_layer):
        ours, hf = f"transformer.h.{i}.", f"model.layers.{i}."
        out[ours + "ln_1.weight"] = [(hf + "input_layernorm.weight", c)]
        out[ours + "attn.c_attn.weight"] = [
            (hf + "self_attn.q_proj.weight", cfg.n_head * d),
            (hf + "self_attn.k_proj.weight", cfg.n_kv_head * d),
            (hf + "self_attn.v_proj.weight", cfg.n_kv_head * d),
        ]
        out[ours + "attn.c_proj.weight"] = [(hf + "self_attn.o_proj.weight", c)]
        if cfg.qk_norm:
            out[ours + "attn.q_norm.weight"] = [(hf + "self_attn.q_norm.weight", d)]
            out[ours + "attn.k_norm.weight"] = [(hf + "self_attn.k_norm.weight", d)]
        out[ours + "ln_2.weight"] = [(hf + "post_attention_layernorm.weight", c)]
        out[ours + "mlp.c_fc.weight"] = [(hf + "mlp.gate_proj.weight", f), (hf + "mlp.up_proj.weight", f)]
        out[ours + "mlp.c_proj.weight"] = [(hf + "mlp.down_proj.weight", c)]
    out["transformer.ln_f.weight"] = [("model.norm.weight", c)]
    if not cfg.tie_embeddings:
        out[LM_HEAD] = [(LM_HEAD, v)]
    return out


def hf_layout(cfg: ModelConfig, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """HF name -> shape, for our weights of `shapes`, in the order of `shapes`."""
    table = pieces(cfg)
    return {hf: (rows, *shape[1:]) for name, shape in shapes.items() for hf, rows in table[name]}


def to_hf_tensors(name: str, tensor: torch.Tensor, cfg: ModelConfig) -> list[tuple[str, torch.Tensor]]:
    """One weight of ours -> its HF tensors (row slices: padding rows fall off the end)."""
    out, start = [], 0
    for hf, rows in pieces(cfg)[name]:
        out.append((hf, tensor[start : start + rows]))
        start += rows
    return out


def from_hf(cfg: ModelConfig, raw: Mapping[str, tuple[tuple[int, ...], Callable[[], torch.Tensor]]],
            config_file: Path) -> dict[str, LazyTensor]:
    """HF name -> (shape, loader) -> our weights (fp32, HF tensors stacked by rows). A missing,
    extra or misshapen tensor is a CheckpointError naming `config_file`."""
    expected = param_shapes(cfg)
    if cfg.tie_embeddings:
        raw = {k: v for k, v in raw.items() if k != LM_HEAD}  # a stored copy of the tied head
    out = {}
    for name, parts in pieces(cfg).items():
        for hf, rows in parts:
            want = (rows, *expected[name][1:])
            if hf not in raw or tuple(raw[hf][0]) != want:
                got = "missing" if hf not in raw else f"of shape {tuple(raw[hf][0])}"
                raise CheckpointError(
                    f"{config_file}: weight {hf} is {got}, but the config implies {want}; config.json and the "
                    "weight files come from different models"
                )

        def load(parts=parts) -> torch.Tensor:
            return torch.cat([raw[hf][1]().float() for hf, _ in parts])

        out[name] = LazyTensor(expected[name], load)
    unused = sorted(set(raw) - {hf for parts in pieces(cfg).values() for hf, _ in parts})
    if unused:
        raise CheckpointError(f"{config_file}: weights {', '.join(unused[:4])} are not part of a Llama model of this "
                              f"config; only {hf_architecture(cfg)} models of this config can be imported")
    return out


def hf_architecture(cfg: ModelConfig) -> str:
    """The transformers class a model of `cfg` exports as."""
    return "Qwen3ForCausalLM" if cfg.qk_norm else "LlamaForCausalLM"


def hf_config(cfg: ModelConfig, *, eot_id: int | None, dtype: torch.dtype) -> Any:
    """The transformers LlamaConfig for `cfg` (architectures = LlamaForCausalLM), or the
    Qwen3Config (Qwen3ForCausalLM) with model.qk_norm."""
    from transformers import LlamaConfig, Qwen3Config

    common = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.n_embd,
        intermediate_size=cfg.mlp_hidden,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=cfg.block_size,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        attention_bias=False,
        attention_dropout=0.0,  # ours is residual dropout, which Llama has not; inference uses none
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        architectures=[hf_architecture(cfg)],
    )
    if cfg.qk_norm:
        conf = Qwen3Config(use_sliding_window=False, layer_types=["full_attention"] * cfg.n_layer, **common)
    else:
        conf = LlamaConfig(mlp_bias=False, **common)
    conf.dtype = dtype
    return conf


def model_config_from_hf(conf: Mapping[str, Any], config_file: Path) -> ModelConfig:
    """ModelConfig for a Hugging Face Llama config.json (as a dict); anything our llama
    family cannot reproduce exactly is a CheckpointError naming the field."""

    def need(cond: bool, field: str, problem: str) -> None:
        if not cond:
            raise CheckpointError(f"{config_file}: {field}: {problem}; gpt_dist's llama family cannot reproduce it")

    qwen3 = conf.get("model_type") == "qwen3"
    archs = conf.get("architectures") or ["Qwen3ForCausalLM" if qwen3 else "LlamaForCausalLM"]
    known = ("Qwen3ForCausalLM", "Qwen3Model") if qwen3 else ("LlamaForCausalLM", "LlamaModel")
    need(any(a in known for a in archs), "architectures", f"{archs} is not a {known[0]} language model")
    if qwen3:
        need(not conf.get("use_sliding_window", False), "use_sliding_window", "true limits attention to a window")
        layer_types = set(conf.get("layer_types") or ["full_attention"])
        need(layer_types == {"full_attention"}, "layer_types", f"{sorted(layer_types)} has windowed layers")
    need(conf.get("hidden_act", "silu") == "silu", "hidden_act", f"'{conf.get('hidden_act')}' is not SwiGLU's silu")
    need(not conf.get("attention_bias", False), "attention_bias", "true adds biases")
    need(not conf.get("mlp_bias", False), "mlp_bias", "true adds biases")
    need(conf.get("pretraining_tp", 1) in (None, 1), "pretraining_tp", "slices the projections differently")
    rope = conf.get("rope_parameters") or conf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    need(rope_type == "default", "rope_parameters.rope_type", f"'{rope_type}' scales the rotary embedding")
    theta = rope.get("rope_theta", conf.get("rope_theta", 10000.0))
    hidden, heads = conf.get("hidden_size", 4096), conf.get("num_attention_heads", 32)
    head_dim = conf.get("head_dim") or hidden // heads
    need(head_dim * heads == hidden, "head_dim", f"{head_dim} * {heads} heads is not hidden_size={hidden}")
    inter = conf.get("intermediate_size", 11008)
    base = int(2 * 4 * hidden / 3)
    need(inter >= base, "intermediate_size", f"{inter} is below 8/3 * hidden_size = {base}")
    # The roundest multiple that gives exactly this width (LLaMA's own models use 256).
    multiple = next(m for m in (256, 128, 64, 32, 16, 8, inter) if -(-base // m) * m == inter)
    cfg = ModelConfig(
        arch="llama",
        n_layer=conf.get("num_hidden_layers", 32),
        n_head=heads,
        n_kv_head=conf.get("num_key_value_heads") or heads,
        n_embd=hidden,
        block_size=conf.get("max_position_embeddings", 2048),
        vocab_size=conf.get("vocab_size", 32000),
        mlp_multiple=multiple,
        rope_theta=float(theta),
        norm_eps=float(conf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(conf.get("tie_word_embeddings", False)),
        qk_norm=qwen3,
    )
    try:
        return resolve_model_config(cfg)
    except ConfigError as e:
        raise CheckpointError(f"{config_file}: {e}") from None
