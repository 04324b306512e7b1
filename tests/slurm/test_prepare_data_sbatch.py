"""slurm/prepare_data.sbatch on the Slurm test bed: the sample corpus becomes train/ and val/
shards inside a batch job."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.timeout(300)
def test_prepare_data_job_writes_the_sample_shards(slurm, tmp_path):
    out = tmp_path / "sample"
    env = dict(slurm.env, PATH=f"{BIN}:{os.environ['PATH']}", VENV=sys.prefix)
    job = slurm.sbatch(REPO / "slurm" / "prepare_data.sbatch", ["--sample", "--output", str(out)],
                       ["--partition=debug", "--cpus-per-task=1", "--time=10", f"--output={tmp_path}/%x-%j.out"],
                       env=env)
    info = slurm.wait_final(job, timeout=240)
    log = (tmp_path / f"gpt-dist-prepare-{job}.out").read_text(errors="replace")
    assert info["JobState"] == "COMPLETED", log[-4000:]
    assert "--executor local --workers 1 --sample" in log
    for split in ("train", "val"):
        manifest = json.loads((out / split / "manifest.json").read_text())
        assert manifest["shards"], (split, manifest)


def test_prepare_data_without_arguments_fails_with_usage(slurm, tmp_path):
    job = slurm.sbatch(REPO / "slurm" / "prepare_data.sbatch", [],
                       ["--partition=debug", "--cpus-per-task=1", f"--output={tmp_path}/%x-%j.out"])
    info = slurm.wait_final(job, timeout=60)
    assert info["JobState"] == "FAILED"
    assert "give the arguments of gpt-dist prepare" in (tmp_path / f"gpt-dist-prepare-{job}.out").read_text()
