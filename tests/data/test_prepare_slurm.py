"""`gpt-dist prepare --executor slurm` on the real Slurm test bed.

The jobs are submitted to Slurm for real, held (so the shared test bed does no work for us),
checked (one array per job, chained by dependencies), cancelled, and then each array task is
run the way a compute node runs it: the pickled executor with SLURM_ARRAY_TASK_ID set.
"""

import os
import signal
import subprocess

import dill
import pytest

from gpt_dist.data.prepare import run_prepare
from gpt_dist.data.prepare_config import load_prepare_config

from data_helpers import english_doc, shard_hashes, write_jsonl

pytestmark = pytest.mark.slow


def scontrol_job(job: str, env: dict) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()[0]
    return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)


def test_slurm_executor_submits_one_held_array_per_job_and_its_tasks_build_the_shards(tmp_path, slurm_conf, monkeypatch):
    import random

    rng = random.Random(7)
    for i in range(2):
        write_jsonl(tmp_path / f"raw/{i}.jsonl", [{"text": english_doc(rng, 80)} for _ in range(10)])
    job_name = f"gptdist-test-{os.getpid()}"
    common = {"sources": [{"name": "raw", "path": str(tmp_path / "raw")}], "seq_len": 16, "val_fraction": 0.2,
              "quality": {"enabled": False}}
    slurm = {"kind": "slurm", "tasks": 2, "slurm": {"partition": "debug", "time": "10", "mem_per_cpu_gb": 1,
                                                    "job_name": job_name, "sbatch_args": {"hold": ""}}}
    monkeypatch.setenv("SLURM_CONF", slurm_conf)
    env = dict(os.environ)
    result = run_prepare(load_prepare_config(None, dict(common, output=str(tmp_path / "out"), executor=slurm)))
    job_names = ["clean", "exact_find", "minhash_sig", "minhash_buckets", "minhash_cluster", "tokenize", "finalize"]
    try:
        assert result.status == "submitted" and len(result.job_ids) == len(job_names)
        jobs = [scontrol_job(j, env) for j in result.job_ids]
        assert [j["JobName"] for j in jobs] == [f"{job_name}-{s}" for s in job_names]
        assert all(j["JobState"] == "PENDING" and j["Reason"] in ("JobHeldUser", "JobHeldAdmin") for j in jobs)
        assert [j.get("ArrayTaskId") for j in jobs][0] == "0-1"  # one array: the 2 clean tasks
        for prev, job in zip(result.job_ids, jobs[1:]):
            assert f"afterok:{prev}" in job["Dependency"]  # each job waits for the one before
    finally:
        for s in job_names:
            subprocess.run(["scancel", f"--name={job_name}-{s}"], env=env, capture_output=True)
    work = tmp_path / "out" / ".prepare"
    script = (work / "logs" / "clean" / "launch_script.slurm").read_text()
    assert "#SBATCH --partition=debug" in script and "#SBATCH --array=0-1" in script
    assert f"launch_pickled_pipeline {work / 'logs' / 'clean' / 'executor.pik'}" in script

    # What each compute node does: load the pickled executor and run its array task.
    monkeypatch.setenv("SLURM_NODELIST", "node1")
    usr1 = signal.getsignal(signal.SIGUSR1)
    try:
        for name in job_names:
            pik = work / "logs" / name / "executor.pik"
            with open(pik, "rb") as f:
                executor = dill.load(f)
            for task in range(executor.tasks):
                monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
                executor.run()
    finally:
        signal.signal(signal.SIGUSR1, usr1)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")

    local = dict(common, output=str(tmp_path / "local"), executor={"tasks": 2, "workers": 1})
    run_prepare(load_prepare_config(None, local))
    for split in ("train", "val"):
        assert shard_hashes(tmp_path / "out" / split) == shard_hashes(tmp_path / "local" / split)
