"""The README's main job, run as a new user would: the sample shards, then the sample run,
with no GPT_DIST_GPT2_VOCAB (the GPT-2 vocabulary ships with the package)."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

PREPARE = "gpt-dist prepare --sample --output data/sample"
TRAIN = "gpt-dist train configs/sample_cpu.yaml"
TRAIN_ZERO3 = "gpt-dist train configs/sample_cpu.yaml --set run_dir=runs/zero3 --set engine.zero_stage=3 --set train.max_steps=8"


def sh(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(cmd)
    argv[0] = str(BIN / argv[0])
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env.pop("GPT_DIST_GPT2_VOCAB", None)
    # About a minute and a half on an idle 2-core machine (docs/benchmarks.md); the timeout leaves
    # room for a machine several times slower than that.
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sample_pretraining_run(tmp_path):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    p = sh(PREPARE, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    p = sh(TRAIN, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    for banner in ("Setting accelerator to CPU", "built successfully"):  # DeepSpeed's, filtered
        assert banner not in p.stdout + p.stderr
    run = tmp_path / "runs" / "sample"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    assert train[-1]["step"] == 30
    assert train[-1]["loss"] < train[0]["loss"] - 2.0
    assert val and val[-1]["loss"] < 8.0
    assert (run / "loss_curve.png").is_file()
    assert (run / "ckpt" / "step_00000030" / "COMPLETE").is_file()

    p = sh(TRAIN_ZERO3, tmp_path)  # the same config under ZeRO-3 in one process
    assert p.returncode == 0, p.stderr[-3000:]
    assert "FutureWarning" not in p.stderr  # torch's deprecations inside DeepSpeed's ZeRO-3 collectives
    rows = [json.loads(x) for x in (tmp_path / "runs" / "zero3" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"][-1] == 8
