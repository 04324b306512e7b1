"""`gpt-dist bench --loss-fraction`: an SFT-like step, where a prompt at the start of each row has
no loss (docs/benchmarks.md, "Tokens without a loss")."""

from __future__ import annotations

import json
import subprocess

import pytest

from gpt_dist.benchmark.training import BenchSettings, run_training_benchmark
from gpt_dist.config import ModelConfig, resolve_model_config
from gpt_dist.errors import UserError
from testutil import BIN, REPO

DOCUMENTED = "gpt-dist bench --model mini --seq-len 256 --micro-batch 4 --steps 4 --warmup 1 --loss-fraction 0.33 --json"


def test_documented_sft_like_bench_counts_the_tokens_with_a_loss():
    p = subprocess.run([str(BIN / "gpt-dist"), *DOCUMENTED.split()[1:]], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout)
    assert (r["loss_fraction"], r["tokens_per_step"], r["loss_tokens_per_step"]) == (0.33, 1024, 4 * 84)
    assert r["first_loss"] == pytest.approx(10.82, abs=0.1)  # ln(50257): an untrained model's mean over counted tokens


def test_loss_fraction_is_checked_and_shown():
    tiny = resolve_model_config(ModelConfig(preset="tiny"))
    with pytest.raises(UserError, match=r"--loss-fraction: 0.0 must be in \(0, 1\]"):
        run_training_benchmark(BenchSettings(model=tiny, loss_fraction=0.0))
    from gpt_dist.benchmark.training import format_result

    r = run_training_benchmark(BenchSettings(model=tiny, seq_len=32, micro_batch=2, steps=1, warmup=0, loss_fraction=0.5))
    assert r["loss_tokens_per_step"] == 32 and "loss on 32 of 64 tokens" in format_result(r)
