"""The training loop in process (a one-process gloo world): its communication per step, the
callback contract, what it prints, resume checks, metrics files and the loss plot."""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

import pytest
import torch

from gpt_dist.config import load_config
from gpt_dist.engine.callbacks import Callback, plot_loss_curve
from gpt_dist.engine.trainer import train
from gpt_dist.errors import UserError

from engine_runs import base_overrides
from testutil import REPO

# one step = 2 micro-batches of 2 x 256 tokens, through the 2-layer `tiny` shape (the loop is under test)
SMALL = ["model.preset=tiny", "model.block_size=256", "train.micro_batch_size=2", "train.global_batch_tokens=1024", "eval.batches=1", "log.every_steps=2",
         "eval.every_steps=1000", "checkpoint.every_steps=1000"]


def config(shards, run_dir, *extra):
    return load_config([REPO / "configs/sample_cpu.yaml"], base_overrides(shards, run_dir) + SMALL + list(extra))


def rows(run_dir: Path, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def events(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]


_COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "barrier", "reduce",
                "reduce_scatter", "reduce_scatter_tensor", "all_to_all_single", "gather", "scatter")


class CountLoopCollectives(Callback):
    """Counts torch.distributed collectives issued by gpt_dist's own code (not DeepSpeed's),
    and remembers the count at the end of every step."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.at_step: dict[int, int] = {}
        for name in _COLLECTIVES:
            real = getattr(torch.distributed, name)
            monkeypatch.setattr(torch.distributed, name, self._wrap(real))

    def _wrap(self, real):
        def counted(*args, **kwargs):
            frames = traceback.extract_stack()[:-1]
            caller = next((f.filename for f in reversed(frames) if "/torch/" not in f.filename), "")
            if "/gpt_dist/" in caller and "/deepspeed/" not in caller:
                self.calls += 1
            return real(*args, **kwargs)
        return counted

    def on_step_end(self, trainer, outcome):
        self.at_step[trainer.state.step] = self.calls


def test_one_collective_of_the_loops_own_per_step(sample_shards, tmp_path, monkeypatch):
    counter = CountLoopCollectives(monkeypatch)
    train(config(sample_shards, tmp_path, "train.max_steps=5", "log.every_steps=1"), callbacks=[counter])
    per_step = [counter.at_step[s + 1] - counter.at_step[s] for s in range(1, 5)]
    assert per_step == [1, 1, 1, 1]  # logging every step costs no extra collective either


class Recorder(Callback):
    """A user's own callback: sees every hook, on rank 0 here, and keeps state across a resume."""

    priority = -20

    def __init__(self):
        self.seen: list[str] = []
        self.steps_total = 0  # saved with the checkpoint
        self.restored: dict | None = None
        self.plot_at_log: list[bool] = []

    def on_train_start(self, trainer):
        self.seen.append("start")

    def on_step_end(self, trainer, outcome):
        self.steps_total += 1
        assert outcome.loss == outcome.loss and outcome.tokens == 1024

    def on_log(self, trainer, metrics):
        self.seen.append("log")
        self.plot_at_log.append((trainer.run_dir / "loss_curve.png").is_file())

    def on_eval(self, trainer, metrics):
        self.seen.append(f"eval:{metrics['split']}")

    def on_checkpoint(self, trainer, tag_dir):
        self.seen.append(f"checkpoint:{tag_dir.name}")

    def on_train_end(self, trainer, result):
        self.seen.append("end")

    def state_dict(self):
        return {"steps_total": self.steps_total}

    def load_state_dict(self, state):
        self.restored = dict(state)
        self.steps_total = state["steps_total"]


def test_callbacks_see_every_boundary_and_keep_their_state_across_a_resume(sample_shards, tmp_path):
    first = Recorder()
    train(config(sample_shards, tmp_path, "train.max_steps=4", "train.exit_after_steps=2", "eval.every_steps=2"),
          callbacks=[first])
    # step 2: its log row, then its evaluation; the stop after it saves; then the end
    assert first.seen == ["start", "log", "eval:val", "checkpoint:step_00000002", "end"]
    assert first.plot_at_log == [True]  # the plot is redrawn at each log interval, not only at the end
    second = Recorder()
    train(config(sample_shards, tmp_path, "train.max_steps=4", "eval.every_steps=2"), callbacks=[second])
    assert second.restored == {"steps_total": 2} and second.steps_total == 4


def test_console_lines_and_summary(sample_shards, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gpt_dist")
    train(config(sample_shards, tmp_path, "train.max_steps=2", "eval.every_steps=2"))
    text = caplog.text
    assert f"no checkpoint found in {tmp_path / 'ckpt'}, starting fresh" in text
    assert "step 2/2 | loss " in text and " | lr " in text and " tok/s" in text
    assert "{'" not in text  # events are sentences, not dict reprs
    assert "run complete: 2 steps" in text and "val loss" in text
    assert f"checkpoint  {tmp_path / 'ckpt' / 'step_00000002'}" in text and "loss_curve.png" in text
    caplog.clear()
    result = train(config(sample_shards, tmp_path, "train.max_steps=2"))
    assert result.step == 2
    assert "run already complete: 2 of 2 steps done" in caplog.text


def test_resumed_progress_bar_starts_where_it_resumed(sample_shards, tmp_path, capsys):
    train(config(sample_shards, tmp_path, "train.max_steps=3", "train.exit_after_steps=2"))
    capsys.readouterr()
    train(config(sample_shards, tmp_path, "train.max_steps=3", "log.progress_bar=true"))
    err = capsys.readouterr().err
    assert "2/3" in err and "0/3" not in err
    shown = [line.split("\r")[-1] for line in err.split("\n")]  # what a terminal keeps: the last redraw of each line
    assert sum("3/3" in line for line in shown) == 1  # the final bar, printed once


def test_a_schedule_change_on_resume_is_an_error_or_an_explicit_choice(sample_shards, tmp_path):
    train(config(sample_shards, tmp_path, "train.max_steps=3", "train.exit_after_steps=1"))
    with pytest.raises(UserError, match=r"train.max_steps=3 \(now 4\).*checkpoint.allow_schedule_change: true"):
        train(config(sample_shards, tmp_path, "train.max_steps=4"))
    with pytest.raises(UserError, match=r"global batch of 4 sequences \(now 8\)"):
        train(config(sample_shards, tmp_path, "train.max_steps=3", "train.global_batch_tokens=2048"))
    result = train(config(sample_shards, tmp_path, "train.max_steps=4", "checkpoint.allow_schedule_change=true"))
    assert result.step == 4
    changed = [e for e in events(tmp_path) if e["event"] == "schedule_changed"]
    assert changed and "train.max_steps=3 (now 4)" in changed[0]["changes"]


def test_a_torn_metrics_line_is_cut_on_resume_and_never_breaks_the_plot(sample_shards, tmp_path):
    train(config(sample_shards, tmp_path, "train.max_steps=4", "train.exit_after_steps=2"))
    metrics = tmp_path / "metrics.jsonl"
    with metrics.open("a") as f:
        f.write('{"split": "train", "step": 3, "loss": 4.1')  # killed mid-write
    assert plot_loss_curve(metrics, tmp_path / "p.png") == tmp_path / "p.png"  # the plot skips it
    result = train(config(sample_shards, tmp_path, "train.max_steps=4"))
    assert result.step == 4
    lines = metrics.read_text().splitlines()
    assert all(json.loads(x) for x in lines)  # every line parses: the torn one is gone
    assert [r["step"] for r in rows(tmp_path, "train")] == [2, 4]


def test_multiple_choice_accuracy_is_logged_during_training(sample_shards, tmp_path):
    mc = tmp_path / "mc.jsonl"
    items = [{"ctx": f"The number {i} is", "endings": [" even.", " odd.", " a colour."], "label": i % 2} for i in range(6)]
    mc.write_text("".join(json.dumps(x) + "\n" for x in items))
    train(config(sample_shards, tmp_path / "run", "train.max_steps=4", f"eval.mc={mc}", "eval.mc_every_steps=2"))
    scored = rows(tmp_path / "run", "mc")
    assert [r["step"] for r in scored] == [2, 4]
    for r in scored:
        assert r["items"] == 6 and 0.0 <= r["acc"] <= 1.0 and 0.0 <= r["acc_norm"] <= 1.0


class SignalAt(Callback):
    """Sends this process SIGUSR1 at the end of a step, as SLURM would at any moment."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, outcome):
        if trainer.state.step == self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.fixture
def restore_signal_handlers():
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_signal_saves_and_exits_cleanly_then_resumes(sample_shards, tmp_path, restore_signal_handlers):
    from gpt_dist.checkpoint.layout import latest_complete_tag

    over = ["train.max_steps=100000", "checkpoint.every_steps=100000"]
    result = train(config(sample_shards, tmp_path, *over), callbacks=[SignalAt(2)])
    assert result.stopped_by_signal == "SIGUSR1"
    sig = [e for e in events(tmp_path) if e["event"] == "signal"]
    # the signal arrived after step 2; the stop request travels with step 3's all-reduce
    assert sig and sig[0]["signal"] == "SIGUSR1" and sig[0]["step"] == 3
    tag = latest_complete_tag(tmp_path / "ckpt")
    assert tag is not None and int(tag.split("_")[1]) == sig[0]["step"]
    again = train(config(sample_shards, tmp_path, *over, "train.exit_after_steps=1"))
    assert again.step == 4
    resumed = [e for e in events(tmp_path) if e["event"] == "resumed"]
    assert resumed[-1]["tag"] == tag


def test_wandb_offline_run_records_the_metrics(sample_shards, tmp_path):
    train(config(sample_shards, tmp_path, "train.max_steps=3", "log.wandb.mode=offline", "eval.every_steps=3"))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    history = list(runs[0].glob("run-*.wandb"))
    assert history and history[0].stat().st_size > 0
    records = history[0].read_bytes()  # the run's protobuf records hold the logged keys
    assert b"train/loss" in records and b"train/tokens_per_s" in records and b"val/loss" in records
