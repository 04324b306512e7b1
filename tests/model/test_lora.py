"""LoRA through peft on our GPT: what trains, where the adapted model starts, and the merge
that every checkpoint reader applies (checked against peft's own merge)."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora import LoraLayer

from gpt_dist.config import LoraConfig, ModelConfig, resolve_model_config
from gpt_dist.model import lora
from gpt_dist.model.gpt import GPT

CFG = LoraConfig(r=4, alpha=8.0, dropout=0.0)


def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(resolve_model_config(ModelConfig(preset="tiny", vocab_size=512))).eval()


def adapted(randomize: bool = True) -> tuple[GPT, GPT]:
    """(plain model, the same weights with adapters; B made non-zero when `randomize`)."""
    base = tiny()
    model = tiny()
    model = lora.add_lora(model, CFG)
    if randomize:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".lora_B." in name:
                    p.normal_(std=0.05)
    return base, model.eval()


def test_only_the_adapters_train_and_the_model_starts_at_the_base():
    base, model = adapted(randomize=False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    # per layer: c_attn (C -> 3C), attn c_proj (C -> C), c_fc (C -> 4C), mlp c_proj (4C -> C)
    c, layers, r = base.config.n_embd, base.config.n_layer, CFG.r
    per_layer = r * ((c + 3 * c) + (c + c) + (c + 4 * c) + (4 * c + c))
    assert lora.trainable_parameters(model) == (layers * per_layer, sum(p.numel() for p in model.parameters()))
    idx = torch.randint(0, 512, (2, 12))
    with torch.no_grad():
        assert torch.equal(model(idx), base(idx))  # B starts at zero


def test_merged_state_dict_is_what_peft_merges_and_computes_the_same():
    _, model = adapted()
    idx = torch.randint(0, 512, (2, 12))
    with torch.no_grad():
        want = model(idx)
    merged = lora.merge(model.state_dict(), {"r": CFG.r, "alpha": CFG.alpha}, lora.merge_tensors)
    plain = tiny()
    plain.load_state_dict(merged)  # strict: exactly the plain GPT names
    with torch.no_grad():
        assert (plain(idx) - want).abs().max() < 1e-5
    # peft's own merge gives the same weights
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            module.merge()
            assert torch.allclose(module.base_layer.weight, merged[f"{name}.weight"], atol=1e-6), name


def test_merge_names_a_missing_adapter():
    _, model = adapted()
    state = model.state_dict()
    del state["transformer.h.0.mlp.c_fc.lora_B.default.weight"]
    with pytest.raises(KeyError, match="transformer.h.0.mlp.c_fc.lora_B.default.weight"):
        lora.merge(state, {"r": CFG.r, "alpha": CFG.alpha}, lora.merge_tensors)


def test_gpt2_124m_at_rank_8_trains_the_documented_count():
    # docs/finetune.md: 1,179,648 adapter parameters for gpt2 at r = 8 (r x (in + out) per layer)
    with torch.device("meta"):
        model = GPT(resolve_model_config(ModelConfig(preset="gpt2")))
    trainable, _ = lora.trainable_parameters(lora.add_lora(model, LoraConfig(r=8)))
    assert trainable == 1_179_648
