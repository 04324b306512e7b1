"""slurm/pretrain.sbatch on a real two-node Slurm (tools/slurm_testbed.sh), one CPU rank per node:
train, get SIGUSR1 as at the time limit, checkpoint, requeue, resume, finish."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from gpt_dist.checkpoint.layout import complete_tags

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SBATCH = REPO / "slurm" / "pretrain.sbatch"
# The CPU test bed has no GPUs, 1 CPU per node and a partition named debug.
CPU_NODES = ["--partition=debug", "--gpus-per-node=0", "--cpus-per-task=1", "--time=10"]
STEPS = 12
GLOBAL_BATCH = 1024  # 2 ranks x micro-batch 2 x 256 tokens: one micro-batch per rank per step


def _job_env(slurm, nproc: int | None = 1) -> dict[str, str]:
    """What a user's shell would hold at `sbatch` time: SLURM_CONF, the environment, NPROC_PER_NODE."""
    env = dict(slurm.env, PATH=f"{BIN}:{os.environ['PATH']}", VENV=sys.prefix, OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    env.pop("NPROC_PER_NODE", None)
    if nproc is not None:
        env["NPROC_PER_NODE"] = str(nproc)
    return env


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    # The last line may be half-written while a job runs.
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def _log(tmp_path: Path, job: int) -> str:
    f = tmp_path / f"gpt2-pretrain-{job}.out"
    return f.read_text(errors="replace") if f.is_file() else f"(no log at {f})"


def test_testbed_runs_one_task_on_each_of_two_nodes(slurm):
    out = slurm.run("srun", "--nodes=2", "--ntasks-per-node=1", "bash", "-c",
                    'echo "$SLURMD_NODENAME $(scontrol show hostnames "$SLURM_JOB_NODELIST" | paste -sd,)"').stdout
    lines = sorted(out.split("\n")[:-1])
    assert lines == ["node1 node1,node2", "node2 node1,node2"], out


@pytest.mark.timeout(420)
def test_sigusr1_checkpoints_requeues_and_resumes(slurm, sample_shards, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        f"run_dir={run_dir}",
        f"data.train=[{{path: {sample_shards / 'train'}, weight: 1.0}}]",
        f"data.val={sample_shards / 'val'}",
        f"train.max_steps={STEPS}",
        f"train.global_batch_tokens={GLOBAL_BATCH}",
        "train.micro_batch_size=2",
        "log.every_steps=1",
        "log.progress_bar=false",
        # The only checkpoints: the one the signal asks for, and the final one.
        "checkpoint.every_steps=1000",
        "eval.every_steps=1000",
        "eval.batches=1",
    ]
    args = ["configs/sample_cpu.yaml", *[x for o in overrides for x in ("--set", o)]]
    job = slurm.sbatch(SBATCH, args, CPU_NODES + [f"--output={tmp_path}/%x-%j.out"], env=_job_env(slurm))

    def train_steps() -> list[int]:
        return [r["step"] for r in _jsonl(run_dir / "metrics.jsonl") if r.get("split") == "train"]

    # Signal as soon as the ranks are training, the way the script's --signal=USR1@120 does
    # before the time limit: to every process of the job step, not the batch shell. (Shortening
    # the time limit instead would make the test wait for slurmctld's 30-60 s timer.)
    deadline = time.monotonic() + 180
    while not train_steps():
        info = slurm.job(job)
        assert info["JobState"] in ("PENDING", "RUNNING", "CONFIGURING"), (info["JobState"], _log(tmp_path, job))
        assert time.monotonic() < deadline, "no training step within 180 s:\n" + _log(tmp_path, job)
        time.sleep(0.2)
    slurm.run("scancel", "--signal=USR1", str(job))

    info = slurm.wait_final(job, timeout=300)
    log = _log(tmp_path, job)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info["JobState"], info["ExitCode"], log)
    assert info["Restarts"] == "1", log
    assert "attempt 1 on node[1-2]" in log and "attempt 2 on node[1-2]" in log, log

    events = _jsonl(run_dir / "events.jsonl")
    names = [e["event"] for e in events]
    sig = next(e for e in events if e["event"] == "signal")
    k = sig["step"]
    assert sig["signal"] == "SIGUSR1" and 0 < k < STEPS, (sig, names)
    after_sig = events[names.index("signal"):]
    assert after_sig[1]["event"] == "checkpoint" and after_sig[1]["tag"] == f"step_{k:08d}", names
    requeue = next(e for e in after_sig if e["event"] == "requeue")
    assert requeue["ok"] and requeue["job_id"] == str(job), requeue
    resumed = next(e for e in after_sig if e["event"] == "resumed")
    assert resumed["tag"] == f"step_{k:08d}" and resumed["step"] == k and resumed["world_size"] == 2, resumed
    assert names[-1] == "finished", names

    # Every step trained exactly once: 1..k before the signal, k+1..STEPS after the resume,
    # with the token count carried over.
    rows = [r for r in _jsonl(run_dir / "metrics.jsonl") if r.get("split") == "train"]
    steps = [r["step"] for r in rows]
    assert steps == list(range(1, STEPS + 1)), steps
    assert all(r["tokens"] == r["step"] * GLOBAL_BATCH for r in rows)
    assert complete_tags(run_dir / "ckpt") == [f"step_{k:08d}", f"step_{STEPS:08d}"]


def test_missing_config_fails_the_job_with_its_name(slurm, tmp_path):
    job = slurm.sbatch(SBATCH, ["configs/no_such_config.yaml"], CPU_NODES + [f"--output={tmp_path}/%x-%j.out"],
                       env=_job_env(slurm))
    info = slurm.wait_final(job, timeout=60)
    assert info["JobState"] == "FAILED"
    assert "config file not found: configs/no_such_config.yaml" in _log(tmp_path, job)


def test_cpu_nodes_without_nproc_per_node_fail_with_the_fix(slurm, tmp_path):
    job = slurm.sbatch(SBATCH, ["configs/sample_cpu.yaml"], CPU_NODES + [f"--output={tmp_path}/%x-%j.out"],
                       env=_job_env(slurm, nproc=None))
    info = slurm.wait_final(job, timeout=60)
    assert info["JobState"] == "FAILED"
    assert "set NPROC_PER_NODE=N for CPU ranks" in _log(tmp_path, job)


def test_sbatch_header_signals_the_step_before_the_time_limit_and_requeues():
    """What the signal test above cannot see: the directives that make SLURM send that signal."""
    lines = [ln.split()[1] for ln in SBATCH.read_text().splitlines() if ln.startswith("#SBATCH ")]
    signal = [ln for ln in lines if ln.startswith("--signal=")]
    # No "B:": that would signal only the batch shell, never the ranks.
    assert signal == ["--signal=USR1@120"], signal
    assert "--requeue" in lines and "--open-mode=append" in lines
    assert {"--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=1"} <= set(lines)
