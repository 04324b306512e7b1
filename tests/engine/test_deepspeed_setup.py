import json

import pytest

from gpt_dist.batch_geometry import run_geometry
from gpt_dist.config import ConfigError, load_config
from gpt_dist.engine.deepspeed_setup import build_ds_config, param_groups
from gpt_dist.model.gpt import GPT

SMALL = ["model.preset=tiny", "train.seq_len=64", "train.micro_batch_size=2", "train.global_batch_tokens=1024"]


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_owned_values_come_from_our_config(stage):
    cfg = load_config(overrides=SMALL + [f"engine.zero_stage={stage}", "train.grad_clip=0.5", "train.precision=bf16"])
    ds = build_ds_config(cfg.train, cfg.engine, run_geometry(cfg, 2))
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["train_micro_batch_size_per_gpu"] == 2
    assert ds["gradient_accumulation_steps"] == 4  # 1024 / (2 * 64 * 2)
    assert ds["train_batch_size"] == 16
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"] == {"enabled": True} and "fp16" not in ds
    assert "optimizer" not in ds and "scheduler" not in ds


def test_zero3_knobs_for_gpt2_sizes():
    cfg = load_config(overrides=SMALL + ["engine.zero_stage=3"])
    z = build_ds_config(cfg.train, cfg.engine, run_geometry(cfg, 1))["zero_optimization"]
    assert z["overlap_comm"] and z["contiguous_gradients"]
    assert z["stage3_gather_16bit_weights_on_model_save"] is True
    assert z["stage3_param_persistence_threshold"] > 0 and z["stage3_prefetch_bucket_size"] > 0


def test_fp16_enables_dynamic_loss_scaling():
    cfg = load_config(overrides=SMALL + ["train.precision=fp16"])
    ds = build_ds_config(cfg.train, cfg.engine, run_geometry(cfg, 1))
    assert ds["fp16"]["enabled"] and ds["fp16"]["loss_scale"] == 0  # 0 = dynamic


def test_offload_config_gets_an_optimizer_section_from_our_config():
    cfg = load_config(overrides=SMALL + ["engine.zero_stage=3", "engine.ds_config=ds_configs/zero3_offload.json", "train.lr=3e-4"])
    ds = build_ds_config(cfg.train, cfg.engine, run_geometry(cfg, 1))
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["lr"] == 3e-4
    assert ds["optimizer"]["params"]["betas"] == [0.9, 0.95]


def test_stage_mismatch_between_file_and_config_is_an_error(tmp_path):
    p = tmp_path / "ds.json"
    p.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    cfg = load_config(overrides=SMALL + ["engine.zero_stage=3", f"engine.ds_config={p}"])
    with pytest.raises(ConfigError, match="zero_optimization.stage=2"):
        build_ds_config(cfg.train, cfg.engine, run_geometry(cfg, 1))


def test_bad_json_names_the_file(tmp_path):
    p = tmp_path / "ds.json"
    p.write_text("{not json")
    cfg = load_config(overrides=SMALL + [f"engine.ds_config={p}"])
    with pytest.raises(ConfigError, match="ds.json: not valid JSON"):
        build_ds_config(cfg.train, cfg.engine, run_geometry(cfg, 1))


def test_batch_geometry_error_names_world_size():
    cfg = load_config(overrides=SMALL)
    with pytest.raises(ConfigError, match=r"data-parallel ranks \(3\)"):
        build_ds_config(cfg.train, cfg.engine, run_geometry(cfg, 3))


def test_weight_decay_on_matrices_only():
    model = GPT(load_config(overrides=SMALL).model)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    named = {id(p): n for n, p in model.named_parameters()}
    assert any(named[id(p)].endswith("wte.weight") for p in decay["params"])
    assert any(named[id(p)].endswith("ln_1.bias") for p in no_decay["params"])


def test_lora_optimizer_holds_only_the_adapters():
    from gpt_dist.config import LoraConfig
    from gpt_dist.model.lora import add_lora

    model = add_lora(GPT(load_config(overrides=SMALL).model), LoraConfig(r=4))
    (group,) = param_groups(model, 0.1)  # every adapter tensor is a matrix: no empty no-decay group
    named = {id(p): n for n, p in model.named_parameters()}
    assert group["weight_decay"] == 0.1 and all(".lora_" in named[id(p)] for p in group["params"])
    assert len(group["params"]) == sum(p.requires_grad for p in model.parameters())
