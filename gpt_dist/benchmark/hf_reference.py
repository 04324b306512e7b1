"""Hugging Face's GPT2LMHeadModel as the reference our GPT is timed against.

The twin is built from the same GPT2Config and weight mapping that `gpt-dist convert to-hf`
writes (gpt_dist.checkpoint.state_dict_adapter), so it computes the same function as our
model and their losses on a batch agree to float rounding. Only the vocabulary padding
differs: the twin has exactly `vocab_size` embedding rows, as a Hugging Face GPT-2 always has.
"""

from __future__ import annotations

import torch
from torch import nn

from gpt_dist.model.gpt import GPT


def build_hf_twin(model: GPT):
    """A GPT2LMHeadModel with `model`'s configuration and a copy of its weights (fp32, on CPU)."""
    from transformers import GPT2LMHeadModel

    from gpt_dist.checkpoint.state_dict_adapter import LM_HEAD, hf_config, to_hf_tensor
    from gpt_dist.errors import UserError

    m = model.config
    if not m.bias:
        raise UserError("--compare-hf: model.bias is false, but Hugging Face GPT-2 always has biases; use bias: true")
    eot = 50256 if m.vocab_size > 50256 else None  # GPT-2's <|endoftext|>, when the vocabulary has it
    hf = GPT2LMHeadModel(hf_config(m, eot_id=eot, dtype=torch.float32))
    # The loss HF would fall back to anyway; naming it saves a warning on every run.
    hf.loss_type = "ForCausalLM"
    state = {name: to_hf_tensor(name, t.detach().float().cpu(), m).contiguous()
             for name, t in model.state_dict().items() if name != LM_HEAD}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != LM_HEAD]  # tied to the embedding
    if missing or unexpected:
        raise RuntimeError(f"HF GPT-2 twin: weights did not map one to one (missing {missing}, unexpected {unexpected})")
    if m.activation_checkpointing:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return hf


class HFCausalLM(nn.Module):
    """`model(idx, targets) -> mean loss`, our calling convention, around a GPT2LMHeadModel.

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
