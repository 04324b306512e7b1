import json
import subprocess
import sys
from pathlib import Path

from gpt_dist.checkpoint.layout import latest_complete_tag

from engine_runs import base_overrides
from testutil import REPO

SCRIPT = Path(__file__).with_name("nan_stage_run.py")
OVER = ["train.micro_batch_size=2", "train.global_batch_tokens=1024", "train.max_steps=6", "checkpoint.every_steps=2",
        "train.max_nonfinite_steps=3", "eval.every_steps=1000"]


def run(shards, run_dir, bad):
    args = [sys.executable, str(SCRIPT), "configs/sample_cpu.yaml", bad, *base_overrides(shards, run_dir), *OVER]
    p = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def events(run_dir):
    return [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]


def test_a_nan_loss_is_skipped_and_counted(sample_shards, tmp_path):
    out = run(sample_shards, tmp_path, "3,4")  # two bad micro-batches in a row, limit is 3
    assert out == {"ok": True, "step": 6}
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert all(r["loss"] == r["loss"] for r in rows)  # no NaN reached the logged losses
    assert rows[-1]["skipped_batches"] == 2
    assert sum(e["event"] == "nonfinite_loss_skipped" for e in events(tmp_path)) == 2


def test_too_many_in_a_row_stop_the_run_and_keep_the_last_good_checkpoint(sample_shards, tmp_path):
    # micro-batches 0-3 make steps 1-2 (checkpoint at step 2); 4, 5, 6 are bad
    out = run(sample_shards, tmp_path, "4,5,6")
    assert out["ok"] is False and "3 NaN/inf losses in a row" in out["error"]
    assert latest_complete_tag(tmp_path / "ckpt") == "step_00000002"
    assert events(tmp_path)[-1]["event"] == "stopped_nonfinite"
