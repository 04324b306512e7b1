"""The README.md written next to an exported model: what it is, how to load it, how it was trained."""

from __future__ import annotations

import math
from typing import Any

import yaml

from gpt_dist.config import ModelConfig


def model_card(
    name: str, cfg: ModelConfig, n_params: int, meta: dict[str, Any], *, tag: str, dtype: str, tokenizer: Any
) -> str:
    step, tokens = meta.get("step", 0), meta.get("tokens_seen", 0)
    stage, world = meta.get("zero_stage"), meta.get("world_size")
    chat = meta.get("chat_template")
    llama = cfg.arch == "llama"
    if llama:
        from gpt_dist.checkpoint.llama_adapter import hf_architecture
    kind = (f"A Llama-style language model (`{hf_architecture(cfg)}`, {cfg.n_kv_head} key/value heads" if llama
            else "A GPT-2 language model (`GPT2LMHeadModel`")
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags:",
        f"- {cfg.arch}",
        "- gpt_dist",
        "---",
        "",
        f"# {name}",
        "",
        f"{kind}, {n_params / 1e6:,.1f}M parameters: {cfg.n_layer} layers, "
        f"{cfg.n_head} heads, {cfg.n_embd} hidden, {cfg.block_size} positions, {cfg.vocab_size:,} tokens), "
        "trained with gpt_dist.",
        "",
        f"- Checkpoint: `{tag}`, step {step:,}, {tokens:,} tokens seen"
        + (f", saved by DeepSpeed ZeRO-{stage} on {world} ranks" if stage is not None else "")
        + f"; weights exported as {dtype}.",
        f"- Tokenizer: {tokenizer.kind}, {tokenizer.vocab_size:,} ids, end-of-text id {tokenizer.eot_id}"
        + ("; with the chat template it was fine-tuned with." if chat else "."),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        f'model = AutoModelForCausalLM.from_pretrained("{name}")',
        'ids = tokenizer("Once upon a time", return_tensors="pt").input_ids',
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=40)[0]))",
        "```",
        "",
        "## Last metrics",
        "",
    ]
    metrics = meta.get("metrics") or {}
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items())]
    else:
        lines.append("None recorded.")
    lines += ["", "## Training config", "", "```yaml"]
    lines.append(yaml.safe_dump(meta.get("config") or {}, sort_keys=False).rstrip())
    lines += ["```", ""]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.6g}"
    return str(v)
