"""Hugging Face's model of our model's family as the reference it is timed against:
GPT2LMHeadModel for GPT-2, LlamaForCausalLM (Qwen3ForCausalLM with QK-norm) for the llama family.

The twin is built from the same config and weight mapping that `gpt-dist convert to-hf`
writes (gpt_dist.checkpoint.state_dict_adapter, gpt_dist.checkpoint.llama_adapter), so it
computes the same function as our model and their losses on a batch agree to float rounding.
Only the vocabulary padding differs: the twin has exactly `vocab_size` embedding rows, as a
Hugging Face model always has.
"""

from __future__ import annotations

import torch
from torch import nn

from gpt_dist.model.gpt import GPT


def build_hf_twin(model: GPT):
    """A transformers model with `model`'s configuration and a copy of its weights (fp32, on CPU)."""
    from gpt_dist.checkpoint.state_dict_adapter import LM_HEAD
    from gpt_dist.errors import UserError

    m = model.config
    eot = 50256 if m.vocab_size > 50256 else None  # GPT-2's <|endoftext|>, when the vocabulary has it
    if m.arch == "llama":
        import transformers

        from gpt_dist.checkpoint import llama_adapter

        hf = getattr(transformers, llama_adapter.hf_architecture(m))(
            llama_adapter.hf_config(m, eot_id=eot, dtype=torch.float32))
        tensors = (pair for name, t in model.state_dict().items() if not (name == LM_HEAD and m.tie_embeddings)
                   for pair in llama_adapter.to_hf_tensors(name, t, m))
    else:
        from transformers import GPT2LMHeadModel

        from gpt_dist.checkpoint.state_dict_adapter import hf_config, to_hf_tensor

        if not m.bias:
            raise UserError("--compare-hf: model.bias is false, but Hugging Face GPT-2 always has biases; use bias: true")
        hf = GPT2LMHeadModel(hf_config(m, eot_id=eot, dtype=torch.float32))
        tensors = ((name, to_hf_tensor(name, t, m)) for name, t in model.state_dict().items() if name != LM_HEAD)
    # The loss HF would fall back to anyway; naming it saves a warning on every run.
    hf.loss_type = "ForCausalLM"
    state = {name: t.detach().float().cpu().contiguous() for name, t in tensors}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if m.tie_embeddings:
        missing = [k for k in missing if k != LM_HEAD]  # tied to the embedding
    if missing or unexpected:
        raise RuntimeError(f"HF twin: weights did not map one to one (missing {missing}, unexpected {unexpected})")
    if m.activation_checkpointing:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return hf


class HFCausalLM(nn.Module):
    """`model(idx, targets) -> mean loss`, our calling convention, around a transformers causal LM.

    `targets` are already the next tokens (as in our batches), so they go to Hugging Face's
    loss as `shift_labels`, which it then uses without shifting again; IGNORE_INDEX (-100) is
    Hugging Face's ignore index too.
    """

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.contiguous()  # HF views it flat
        return self.hf(input_ids=idx, labels=targets, shift_labels=targets).loss
