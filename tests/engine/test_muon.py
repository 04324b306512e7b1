"""train.optimizer: muon — DeepSpeed's MuonWithAuxAdam for the blocks' 2-D weights, AdamW for
the rest; the update it makes, the DeepSpeed config it needs, its errors, and exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from gpt_dist.config import ConfigError, load_config
from gpt_dist.engine.deepspeed_setup import build_ds_config, build_optimizer, param_groups
from gpt_dist.engine.trainer import train
from gpt_dist.model.factory import build_model

from engine_runs import base_overrides
from testutil import REPO

MUON = ["model.preset=llama-tiny", "model.block_size=256", "train.optimizer=muon", "train.grad_clip=0",
        "train.micro_batch_size=2", "train.global_batch_tokens=1024", "eval.batches=1", "log.every_steps=1",
        "eval.every_steps=1000", "train.schedule=wsd"]


def config(shards, run_dir, *extra):
    return load_config([REPO / "configs/sample_cpu.yaml"], base_overrides(shards, run_dir) + MUON + list(extra))


def test_hidden_matrices_go_to_muon_and_the_rest_to_adamw(tmp_path):
    cfg = load_config([REPO / "configs/sample_cpu.yaml"], MUON + ["model.tie_embeddings=false", "train.muon_lr=0.05"])
    model = build_model(cfg.model)
    decay, no_decay, muon = param_groups(model, 0.1, cfg.train)
    decay, no_decay = decay["params"], no_decay["params"]
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay} == {"transformer.wte.weight", "lm_head.weight"}
    assert all(".ln_" in names[id(p)] or "ln_f" in names[id(p)] for p in no_decay)
    assert {names[id(p)].split(".", 3)[-1] for p in muon["params"]} == {
        "attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"}
    assert muon["use_muon"] and muon["lr_scale"] == pytest.approx(0.05 / cfg.train.lr)
    assert all(p.use_muon for p in muon["params"]) and not any(p.use_muon for p in decay + no_decay)


def test_muon_orthogonalises_the_update_of_a_hidden_matrix():
    """After one step the change of a block weight has a flat singular spectrum (Newton-Schulz),
    unlike its gradient; the embedding moves by AdamW's first step, lr * sign(grad)."""
    cfg = load_config([REPO / "configs/sample_cpu.yaml"], MUON + ["train.weight_decay=0", "model.vocab_size=97"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    opt = build_optimizer(model, cfg.train, torch.device("cpu"))
    w, wte = model.transformer.h[0].mlp.c_proj.weight, model.transformer.wte.weight
    before, wte_before = w.detach().clone(), wte.detach().clone()
    x = torch.randint(0, 97, (4, 32))
    model(x, x.roll(-1, 1)).backward()
    grad_s = torch.linalg.svdvals(w.grad)
    opt.step()
    update_s = torch.linalg.svdvals(w.detach() - before)
    assert grad_s[0] / grad_s[-1] > 5  # the gradient is far from orthogonal
    assert update_s[0] / update_s[-1] < 2  # the update is close to it
    moved = (wte.detach() - wte_before)[x.unique()]
    torch.testing.assert_close(moved.abs(), torch.full_like(moved, cfg.train.lr), rtol=1e-2, atol=0)  # eps aside


def test_deepspeed_config_and_bad_settings(tmp_path):
    cfg = load_config([REPO / "configs/sample_cpu.yaml"], MUON + ["engine.zero_stage=3"])
    from gpt_dist.batch_geometry import run_geometry

    ds = build_ds_config(cfg.train, cfg.engine, run_geometry(cfg, 1))
    assert ds["zero_optimization"]["reduce_scatter"] is False and "optimizer" not in ds
    with pytest.raises(ConfigError, match=r"train\.grad_clip: 1\.0 with train\.optimizer: muon.*set train\.grad_clip: 0"):
        load_config([REPO / "configs/sample_cpu.yaml"], MUON + ["train.grad_clip=1.0"])
    with pytest.raises(ConfigError, match=r"train\.optimizer: 'mouon' is not one of adamw, muon \(did you mean 'muon'"):
        load_config([REPO / "configs/sample_cpu.yaml"], MUON + ["train.optimizer=mouon"])
    offload = tmp_path / "offload.json"
    offload.write_text(json.dumps({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}))
    cfg = load_config([REPO / "configs/sample_cpu.yaml"], MUON + ["engine.zero_stage=2", f"engine.ds_config={offload}"])
    with pytest.raises(ConfigError, match=r"train\.optimizer: muon cannot run with .*offload_optimizer"):
        build_ds_config(cfg.train, cfg.engine, run_geometry(cfg, 1))


@pytest.mark.parametrize("stage", [2])  # ZeRO-3 on 2 ranks: tests/engine/test_llama_training.py
def test_muon_run_trains_and_resumes_exactly(stage, sample_shards, tmp_path):
    over = [f"engine.zero_stage={stage}", "train.max_steps=4", "checkpoint.every_steps=2"]
    ref = train(config(sample_shards, tmp_path / "ref", *over))
    train(config(sample_shards, tmp_path / "run", *over, "train.exit_after_steps=2"))
    again = train(config(sample_shards, tmp_path / "run", *over))

    def losses(run_dir):
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}

    full, resumed = losses(tmp_path / "ref"), losses(tmp_path / "run")
    assert full[4] < full[1]
    assert [resumed[s] for s in (3, 4)] == [full[s] for s in (3, 4)]  # bitwise, fp32
    assert ref.step == again.step == 4
