"""A llama-family run (grouped-query attention) under ZeRO-3 on 2 gloo ranks: it trains,
resumes on another world size, and both its 2-rank and 1-rank checkpoints convert to a
LlamaForCausalLM whose loss in transformers equals `gpt-dist eval`'s."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import torch
import torch.nn.functional as F

from gpt_dist.checkpoint.layout import latest_complete_tag
from gpt_dist.conversion.hf_export import export_hf
from gpt_dist.data.shards import read_manifest
from gpt_dist.evaluation.lm_loss import every_sequence
from testutil import BIN, REPO

pytestmark = pytest.mark.slow

STEPS = 4
LLAMA = ["model.preset=llama-tiny", "model.block_size=256", "model.n_kv_head=2", "engine.zero_stage=3",
         "train.micro_batch_size=2", "train.global_batch_tokens=1024", f"train.max_steps={STEPS}",
         "checkpoint.every_steps=2", "eval.every_steps=2", "eval.batches=2", "train.lr=3e-3"]
EVAL_BATCHES = 2


def hf_loss(hf_dir, val_dir) -> float:
    """Mean next-token cross-entropy of transformers' model over the batches `gpt-dist eval` reads."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True, dtype=torch.float32).eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in every_sequence(val_dir, read_manifest(val_dir), 4, max_batches=EVAL_BATCHES):
            logits = model(batch["input_ids"]).logits
            total += F.cross_entropy(logits.flatten(0, 1).double(), batch["labels"].flatten(), reduction="sum").item()
            tokens += batch["labels"].numel()
    return total / tokens


def eval_loss(ckpt, val_dir) -> float:
    cmd = [str(BIN / "gpt-dist"), "eval", "--model", str(ckpt), "--data", str(val_dir),
           "--micro-batch", "4", "--batches", str(EVAL_BATCHES), "--json"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)["loss"]


def test_llama_zero3_trains_resumes_on_another_world_size_and_converts(run_train, sample_shards, tmp_path, monkeypatch):
    ref = run_train(tmp_path / "ref", world=1, overrides=LLAMA)
    assert ref.returncode == 0, ref.output[-3000:]
    losses = ref.losses()
    assert losses[STEPS] < losses[1]

    first = run_train(tmp_path / "run", overrides=LLAMA + ["train.exit_after_steps=2"])
    assert first.returncode == 0, first.output[-3000:]
    assert latest_complete_tag(tmp_path / "run" / "ckpt") == "step_00000002"
    second = run_train(tmp_path / "run", world=1, overrides=LLAMA)
    assert second.returncode == 0, second.output[-3000:]
    resumed = [e for e in second.events() if e["event"] == "resumed"]
    assert resumed and resumed[0]["world_size"] == 1
    for step in range(1, STEPS + 1):  # same samples and state; only the gradient sums' order differs
        got = first.losses()[step] if step <= 2 else second.losses()[step]
        assert got == pytest.approx(losses[step], abs=1e-5), step

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for ckpt, world in ((tmp_path / "run" / "ckpt" / "step_00000002", 2), (tmp_path / "ref" / "ckpt" / "step_00000004", 1)):
        meta = json.loads((ckpt / "gpt_dist.json").read_text())
        assert (meta["zero_stage"], meta["world_size"]) == (3, world)
        out = export_hf(ckpt, tmp_path / f"hf_{world}")
        assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
        assert hf_loss(out, sample_shards / "val") == pytest.approx(eval_loss(ckpt, sample_shards / "val"), abs=1e-5)

MUON = LLAMA + ["train.optimizer=muon", "train.grad_clip=0", "train.schedule=wsd", "train.decay_fraction=0.5"]


def test_llama_zero3_with_muon_and_wsd_resumes_exactly_and_converts(run_train, sample_shards, tmp_path, monkeypatch):
    """The issue's finished state: 2 ranks, ZeRO-3, GQA, Muon, WSD; trains, resumes bit for
    bit, converts to LlamaForCausalLM with the loss `gpt-dist eval` gives. Resumed on 1 rank,
    it continues as the uninterrupted run (fp32 weights, AdamW and Muon state resharded by
    gpt_dist.checkpoint.full_state; only the order of the gradient sums differs)."""
    ref = run_train(tmp_path / "ref", overrides=MUON)
    assert ref.returncode == 0, ref.output[-3000:]
    losses = ref.losses()
    assert losses[STEPS] < losses[1]
    lrs = [r["lr"] for r in ref.metrics()]
    assert lrs[1] == lrs[0] > lrs[3]  # stable, then the decay over the last half

    first = run_train(tmp_path / "run", overrides=MUON + ["train.exit_after_steps=2"])
    assert first.returncode == 0, first.output[-3000:]
    shutil.copytree(tmp_path / "run", tmp_path / "one_rank")
    other_world = run_train(tmp_path / "one_rank", world=1, overrides=MUON)
    assert other_world.returncode == 0, other_world.output[-3000:]
    resumed = [e for e in other_world.events() if e["event"] == "resumed"]
    assert resumed and resumed[0]["world_size"] == 1
    for step in (3, 4):
        assert other_world.losses()[step] == pytest.approx(losses[step], abs=1e-5), step
    second = run_train(tmp_path / "run", overrides=MUON)
    assert second.returncode == 0, second.output[-3000:]
    assert any(e["event"] == "resumed" for e in second.events())
    assert [second.losses()[s] for s in (3, 4)] == [losses[s] for s in (3, 4)]  # bitwise, fp32

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = tmp_path / "run" / "ckpt" / "step_00000004"
    out = export_hf(ckpt, tmp_path / "hf")
    assert hf_loss(out, sample_shards / "val") == pytest.approx(eval_loss(ckpt, sample_shards / "val"), abs=1e-5)
