"""launch/single_node.sh (DeepSpeed launcher) and launch/torchrun.sh: two CPU ranks train on
the sample shards, and a signal to the script makes every rank checkpoint and exit 0."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from gpt_dist.checkpoint.layout import complete_tags
from testutil import BIN, REPO, free_port, shard_vocab_overrides

pytestmark = pytest.mark.slow




def _jsonl(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return rows


def _overrides(shards: Path, run_dir: Path) -> list[str]:
    sets = shard_vocab_overrides(shards) + [
        f"run_dir={run_dir}",
        f"data.train=[{{path: {shards / 'train'}, weight: 1.0}}]",
        f"data.val={shards / 'val'}",
        "train.max_steps=200",  # far more than the test waits for: the signal ends the run
        "train.micro_batch_size=2",
        "train.global_batch_tokens=1024",  # one micro-batch of 2 x 256 tokens per rank per step
        "log.every_steps=1",
        "log.progress_bar=false",
        "checkpoint.every_steps=1000",
        "eval.every_steps=1000",
    ]
    return [x for s in sets for x in ("--set", s)]


def _kill_tree(p: subprocess.Popen) -> None:
    try:
        procs = psutil.Process(p.pid).children(recursive=True) + [psutil.Process(p.pid)]
    except psutil.NoSuchProcess:
        return
    for q in procs:
        q.kill()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "script, sig, expected",
    [
        # Ctrl-C at the terminal: the script turns it into SIGTERM for the ranks.
        ("launch/single_node.sh", signal.SIGINT, "SIGTERM"),
        ("launch/torchrun.sh", signal.SIGUSR1, "SIGUSR1"),
    ],
    ids=["single_node-ctrl_c", "torchrun-sigusr1"],
)
def test_two_cpu_ranks_train_and_a_signal_checkpoints_and_exits_0(script, sig, expected, small_vocab_shards,
                                                                  tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", MASTER_PORT=str(free_port()), PYTHONUNBUFFERED="1")
    for k in [k for k in env if k.startswith("SLURM_")] + ["OMP_NUM_THREADS"]:
        env.pop(k, None)  # not a SLURM job (no requeue); the script picks the thread count
    log = (tmp_path / "out.log").open("w")
    p = subprocess.Popen([script, "configs/sample_cpu.yaml", "2", *_overrides(small_vocab_shards, run_dir)],
                         cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not any(r.get("split") == "train" and r["step"] >= 2 for r in _jsonl(run_dir / "metrics.jsonl")):
            assert p.poll() is None, (tmp_path / "out.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (tmp_path / "out.log").read_text()[-4000:]
            time.sleep(0.2)
        p.send_signal(sig)
        rc = p.wait(timeout=120)
    finally:
        _kill_tree(p)
    output = (tmp_path / "out.log").read_text()
    assert rc == 0, output[-4000:]

    events = _jsonl(run_dir / "events.jsonl")
    start = next(e for e in events if e["event"] == "start")
    assert start["world_size"] == 2
    stop = next(e for e in events if e["event"] == "signal")
    assert stop["signal"] == expected, stop
    k = stop["step"]
    assert 2 <= k < 200
    assert complete_tags(run_dir / "ckpt") == [f"step_{k:08d}"]
    assert not any(e["event"] in ("finished", "requeue") for e in events), events
    steps = [r["step"] for r in _jsonl(run_dir / "metrics.jsonl") if r["split"] == "train"]
    assert steps == list(range(1, k + 1))


def _ranks(p: subprocess.Popen) -> list[psutil.Process]:
    try:
        procs = psutil.Process(p.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for q in procs:
        with contextlib.suppress(psutil.Error):
            cmd = q.cmdline()
            if "-m" in cmd and cmd[cmd.index("-m") + 1 :][:2] == ["gpt_dist", "train"]:  # python -u -m gpt_dist train
                out.append(q)
    return out


@pytest.mark.timeout(300)
def test_sigusr1_while_the_ranks_start_is_honoured(small_vocab_shards, tmp_path):
    """SLURM's warning may come at any moment: here as soon as the ranks exist, while they are
    still importing. They inherit the signal blocked, not ignored, and act on it at step 1."""
    run_dir = tmp_path / "run"
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", MASTER_PORT=str(free_port()), PYTHONUNBUFFERED="1")
    for k in [k for k in env if k.startswith("SLURM_")] + ["OMP_NUM_THREADS"]:
        env.pop(k, None)
    overrides = [o.replace("train.max_steps=200", "train.max_steps=30") for o in _overrides(small_vocab_shards, run_dir)]
    log = (tmp_path / "out.log").open("w")
    p = subprocess.Popen(["launch/single_node.sh", "configs/sample_cpu.yaml", "2", *overrides],
                         cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while len(_ranks(p)) < 2:
            assert p.poll() is None and time.monotonic() < deadline, (tmp_path / "out.log").read_text()[-4000:]
            time.sleep(0.02)
        p.send_signal(signal.SIGUSR1)
        rc = p.wait(timeout=240)
    finally:
        _kill_tree(p)
    output = (tmp_path / "out.log").read_text()
    assert rc == 0, output[-4000:]
    stop = next(e for e in _jsonl(run_dir / "events.jsonl") if e["event"] == "signal")
    assert stop["signal"] == "SIGUSR1" and stop["step"] == 1, output[-4000:]
    assert complete_tags(run_dir / "ckpt") == ["step_00000001"]


@pytest.mark.parametrize("script", ["launch/single_node.sh", "launch/torchrun.sh"])
def test_bad_arguments_say_what_is_wrong(script):
    p = subprocess.run([script], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 2 and "CONFIG.yaml" in p.stderr
    p = subprocess.run([script, "configs/no_such.yaml", "2"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 2 and "config file not found: configs/no_such.yaml" in p.stderr
    p = subprocess.run([script, "configs/sample_cpu.yaml", "2", "4"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 2 and "two GPU counts" in p.stderr


def test_hostfile_example_is_a_valid_deepspeed_hostfile():
    from deepspeed.launcher.runner import fetch_hostfile

    assert dict(fetch_hostfile(str(REPO / "launch" / "hostfile.example"))) == {"node-01": 8, "node-02": 8}
