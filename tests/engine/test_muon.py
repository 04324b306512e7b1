"""train.optimizer: muon — DeepSpeed's MuonWithAuxAdam for the blocks' 2-D weights, AdamW for
the rest; the update it makes, the DeepSpeed config it needs, its errors, and exact resume."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

import pytest
import torch

from gpt_dist.checkpoint.full_state import MOMENTUM, gather_full_state, read_full_state
from gpt_dist.checkpoint.layout import read_metadata
from gpt_dist.checkpoint.manifest import write_manifest
from gpt_dist.checkpoint.safe_load import load_file
from gpt_dist.config import ConfigError, load_config
from gpt_dist.engine.deepspeed_setup import build_ds_config, build_optimizer, param_groups
from gpt_dist.engine.distributed import init_distributed
from gpt_dist.engine.objectives import build_objective
from gpt_dist.engine.trainer import Trainer, train
from gpt_dist.errors import CheckpointError
from gpt_dist.model.factory import build_model

from engine_runs import base_overrides, train_cmd
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


def _losses(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


@pytest.mark.parametrize("stage", [2])  # ZeRO-3 on 2 ranks: tests/engine/test_llama_training.py
def test_muon_run_trains_resumes_exactly_and_on_other_world_sizes(stage, sample_shards, tmp_path):
    """Same world size: bit for bit. 1 -> 2 -> 1 ranks under ZeRO-2, whose Muon momentum holds
    the full tensors of each partition's parameters (a split one on both ranks): the state the
    1-rank engine holds after loading is exactly what the 2 ranks saved, and the run continues
    as the uninterrupted one (only the order of the gradient sums differs)."""
    # Multi-head attention: the Muon group's flat tensor then has its 2-rank boundary inside a matrix.
    over = [f"engine.zero_stage={stage}", "train.max_steps=4", "checkpoint.every_steps=2", "model.n_kv_head=4"]
    ref = train(config(sample_shards, tmp_path / "ref", *over))
    # the reference's step 2 is what a run stopped there saves: resumed from copies of it
    for copy in ("run", "moved"):
        shutil.copytree(tmp_path / "ref" / "ckpt" / "step_00000002", tmp_path / copy / "ckpt" / "step_00000002")
    again = train(config(sample_shards, tmp_path / "run", *over))

    full, resumed = _losses(tmp_path / "ref"), _losses(tmp_path / "run")
    assert full[4] < full[1]
    assert [resumed[s] for s in (3, 4)] == [full[s] for s in (3, 4)]  # bitwise, fp32
    assert ref.step == again.step == 4

    moved = tmp_path / "moved"  # step 3 on 2 ranks, saved there
    two = subprocess.run(train_cmd(2, base_overrides(sample_shards, moved) + MUON + over
                                   + ["checkpoint.every_steps=1", "train.exit_after_steps=1"]),
                         cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    tag = moved / "ckpt" / "step_00000003"
    saved = read_full_state(tag, read_metadata(tag))
    momentum = [load_file(f)["optimizer_state_dict"]["base_optimizer_state"]["state"][2][MOMENTUM].numel()
                for f in sorted(tag.glob("zero_pp_rank_*_optim_states.pt"))]
    muon_numel = sum(math.prod(p.shape) for p in saved.params.values() if MOMENTUM in p.tensors)
    assert len(momentum) == 2 and sum(momentum) > muon_numel  # a Muon matrix is split: held whole on both

    cfg = config(sample_shards, moved, *over)
    trainer = Trainer(cfg, init_distributed(), build_objective(cfg))
    live = gather_full_state(trainer.engine)
    assert set(live) == set(saved.params)
    for name, ps in saved.params.items():
        assert set(live[name]) == set(ps.tensors), name
        for key, lt in ps.tensors.items():
            assert torch.equal(live[name][key], lt.load()), (name, key)
    assert trainer.run().step == 4
    got = _losses(moved)
    for step in (3, 4):
        assert got[step] == pytest.approx(full[step], abs=1e-5), step

    # A shard whose Muon momentum does not fit its partition, or that lacks a state the layout
    # needs, is an error naming the file, even with its manifest rewritten to match.
    shard = tag / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    original = load_file(shard)
    sd = original["optimizer_state_dict"]
    sd["base_optimizer_state"]["state"][2][MOMENTUM] = sd["base_optimizer_state"]["state"][2][MOMENTUM][:-8].clone()
    torch.save(original, shard)
    write_manifest(tag)
    with pytest.raises(CheckpointError, match=rf"{shard}: its Muon momentum of parameter group 2 has \d+ elements"):
        read_full_state(tag, read_metadata(tag))
    del sd["single_partition_of_fp32_groups"]
    torch.save(original, shard)
    write_manifest(tag)
    with pytest.raises(CheckpointError, match=rf"{shard}: has no single_partition_of_fp32_groups"):
        read_full_state(tag, read_metadata(tag))

