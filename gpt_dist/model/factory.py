"""The model of a config's family: `build_model(cfg.model)` is GPT-2 (gpt_dist.model.gpt) or
the LLaMA family (gpt_dist.model.llama), both `GPT` instances with the same forward."""

from __future__ import annotations

from gpt_dist.config import ModelConfig, resolve_model_config
from gpt_dist.model.gpt import GPT


def build_model(cfg: ModelConfig) -> GPT:
    """A freshly initialised model of `cfg.arch` (fp32, on the CPU)."""
    resolve_model_config(cfg)
    if cfg.arch == "llama":
        from gpt_dist.model.llama import Llama

        return Llama(cfg)
    return GPT(cfg)
