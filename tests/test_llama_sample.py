"""The README's llama sample, run as written: the llama-mini run with GQA, Muon and WSD on the
sample shards, its export to LlamaForCausalLM (loaded offline by transformers, same logits as
ours), and the GPU recipe's config."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt_dist.config import load_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TRAIN = "gpt-dist train configs/llama_sample_cpu.yaml"
EXPORT = "gpt-dist convert to-hf runs/llama_sample/ckpt exports/llama-sample-hf"


def sh(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), HF_HUB_OFFLINE="1")
    return subprocess.run([str(BIN / a) if i == 0 else a for i, a in enumerate(shlex.split(cmd))], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_llama_sample_run_trains_and_exports(sample_shards, tmp_path):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sample").symlink_to(sample_shards)  # what `gpt-dist prepare --sample` writes
    p = sh(TRAIN, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "runs/llama_sample/metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    assert train[-1]["step"] == 24 and train[-1]["loss"] < train[0]["loss"] - 2.0
    assert val and val[-1]["loss"] < 7.0
    lrs = [r["lr"] for r in train]
    assert lrs[-1] < lrs[len(lrs) // 2] == max(lrs)  # warmup-stable-decay: flat, then down at the end

    p = sh(EXPORT, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from gpt_dist.checkpoint.model_loader import load_model

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "exports/llama-sample-hf", local_files_only=True).eval()
    assert type(hf) is LlamaForCausalLM and hf.config.num_key_value_heads == 2
    ours = load_model(tmp_path / "runs/llama_sample/ckpt", device="cpu", dtype="fp32").model
    idx = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx), rtol=0, atol=1e-5)


def test_llama_124m_recipe_is_a_valid_llama_muon_wsd_run():
    cfg = load_config([REPO / "configs/llama_124m.yaml"])
    m, t = cfg.model, cfg.train
    assert (m.arch, m.n_layer, m.n_embd, m.n_head, m.n_kv_head, m.tie_embeddings) == ("llama", 12, 768, 12, 4, False)
    assert (t.optimizer, t.schedule, t.precision, cfg.engine.zero_stage) == ("muon", "wsd", "bf16", 1)
