"""NaN losses, in process (a one-process gloo world): pre-training whose loss is NaN on chosen
micro-batches (counted from 0). A step holding one is skipped whole and counted; too many
skipped steps in a row stop the run and keep the last good checkpoint."""

import json

import pytest
import torch

from gpt_dist.checkpoint.layout import latest_complete_tag
from gpt_dist.config import load_config
from gpt_dist.engine.objectives import LanguageModeling
from gpt_dist.engine.trainer import NonFiniteLossError, train

from engine_runs import base_overrides
from testutil import REPO

# 2 micro-batches of 2 x 256 tokens per step, through the 2-layer `tiny` shape
OVER = ["model.preset=tiny", "model.block_size=256", "train.micro_batch_size=2", "train.global_batch_tokens=1024", "train.max_steps=6", "checkpoint.every_steps=2",
        "train.max_nonfinite_steps=3", "eval.every_steps=1000"]


class NaNAt(LanguageModeling):
    def __init__(self, bad: set[int]):
        self.bad, self.calls = bad, 0

    def loss(self, model, batch):
        out = super().loss(model, batch)
        if self.calls in self.bad:
            out.loss = out.loss * torch.tensor(float("nan"))
        self.calls += 1
        return out


def run(shards, run_dir, bad: set[int]):
    cfg = load_config([REPO / "configs/sample_cpu.yaml"], base_overrides(shards, run_dir) + OVER)
    return train(cfg, objective=NaNAt(bad))


def events(run_dir):
    return [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]


def test_a_nan_loss_is_skipped_and_counted(sample_shards, tmp_path):
    # micro-batch 3 spoils step 2's first try (2, 3), 4 its second (4, 5); (6, 7) makes step 2
    result = run(sample_shards, tmp_path, {3, 4})
    assert result.step == 6
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert all(r["loss"] == r["loss"] for r in rows)  # no NaN reached the logged losses
    assert rows[-1]["skipped_batches"] == 2
    assert sum(e["event"] == "nonfinite_loss_skipped" for e in events(tmp_path)) == 2


def test_too_many_in_a_row_stop_the_run_and_keep_the_last_good_checkpoint(sample_shards, tmp_path):
    # micro-batches 0-3 make steps 1-2 (checkpoint at step 2); the tries (4, 5), (6, 7), (8, 9) of step 3 are bad
    with pytest.raises(NonFiniteLossError, match="3 NaN/inf losses in a row"):
        run(sample_shards, tmp_path, {4, 6, 8})
    assert latest_complete_tag(tmp_path / "ckpt") == "step_00000002"
    assert events(tmp_path)[-1]["event"] == "stopped_nonfinite"
