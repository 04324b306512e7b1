"""Stop signals are honoured from the first line of `gpt-dist`: a signal during start-up stops
the run at its first step boundary with a checkpoint and exit 0; Ctrl-C on a bare `gpt-dist
train` is a stop like SIGTERM (no KeyboardInterrupt traceback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gpt_dist.checkpoint.layout import complete_tags
from gpt_dist.engine import signals

from engine_runs import base_overrides
from testutil import BIN, REPO


def _overrides(shards: Path, run_dir: Path, max_steps: int) -> list[str]:
    sets = base_overrides(shards, run_dir) + [
        f"train.max_steps={max_steps}", "train.micro_batch_size=2", "train.global_batch_tokens=512",
        "checkpoint.every_steps=1000", "eval.every_steps=1000",
    ]
    return [x for s in sets for x in ("--set", s)]


def _events(run_dir: Path) -> list[dict]:
    f = run_dir / "events.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.is_file() else []


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has a handler for `sig` now (/proc/PID/status SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def _train(run_dir, shards, max_steps, **popen):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("SLURM_JOB_ID", None)
    cmd = [str(BIN / "gpt-dist"), "train", "configs/sample_cpu.yaml", *_overrides(shards, run_dir, max_steps)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def _signal_when(p: subprocess.Popen, ready, sig: signal.Signals, poll_s: float) -> str:
    """Send `sig` to `p` once `ready()`, wait for it to exit 0; returns its output."""
    try:
        deadline = time.monotonic() + 180
        while not ready():
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(poll_s)
        p.send_signal(sig)
        out, _ = p.communicate(timeout=240)
    finally:
        p.kill()
    assert p.returncode == 0, out[-3000:]
    return out


def _assert_stopped_at(run_dir, output, step, name):
    stop = next(e for e in _events(run_dir) if e["event"] == "signal")
    assert stop["signal"] == name and stop["step"] == step, output[-3000:]
    assert complete_tags(run_dir / "ckpt") == [f"step_{step:08d}"]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]


@pytest.mark.timeout(300)
def test_sigusr1_during_start_up_stops_at_the_first_step_with_a_checkpoint(sample_shards, tmp_path):
    run_dir = tmp_path / "run"
    p = _train(run_dir, sample_shards, max_steps=50)
    # As soon as the handler is there: the CLI's first line, long before training.
    out = _signal_when(p, lambda: _catches(p.pid, signal.SIGUSR1), signal.SIGUSR1, poll_s=0.01)
    assert not any(e["event"] == "start" and e["step"] > 0 for e in _events(run_dir))
    _assert_stopped_at(run_dir, out, 1, "SIGUSR1")


@pytest.mark.timeout(300)
def test_a_signal_pending_from_the_launcher_is_delivered_not_lost(sample_shards, tmp_path):
    """As under the launch scripts: the process starts with SIGUSR1 blocked, and the signal
    arrives before the interpreter has even started."""
    run_dir = tmp_path / "run"
    p = _train(run_dir, sample_shards, max_steps=50,
               preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, signals.LAUNCHER_BLOCKED))
    try:
        p.send_signal(signal.SIGUSR1)
        out, _ = p.communicate(timeout=240)
    finally:
        p.kill()
    assert p.returncode == 0, out[-3000:]
    _assert_stopped_at(run_dir, out, 1, "SIGUSR1")


@pytest.mark.timeout(300)
def test_ctrl_c_on_bare_train_saves_and_exits_0(sample_shards, tmp_path):
    run_dir = tmp_path / "run"
    p = _train(run_dir, sample_shards, max_steps=200)
    metrics = run_dir / "metrics.jsonl"
    out = _signal_when(p, lambda: metrics.is_file() and "\n" in metrics.read_text(), signal.SIGINT, poll_s=0.1)
    stop = next(e for e in _events(run_dir) if e["event"] == "signal")
    _assert_stopped_at(run_dir, out, stop["step"], "SIGINT")
    assert 1 <= stop["step"] < 200


def test_a_stop_before_the_run_is_taken_by_the_run_and_only_by_it():
    signals.install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert signals.StopSignal().name == "SIGTERM"
    assert signals.StopSignal().name is None  # the next run in this process starts clean


def test_commands_that_do_not_train_keep_the_default_handlers(capsys):
    from gpt_dist.cli import main

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert main(["plan", "--model", "gpt2", "--gpus", "1"]) in (0, 2)
    capsys.readouterr()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
