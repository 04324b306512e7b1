"""Callbacks: the training loop's extension point (the contract is in callbacks/base.py).

The loop itself is batch -> objective -> engine; everything else a run does is one of these,
built from the config by `default_callbacks`, and a user's own are added with
`train(cfg, callbacks=[...])`."""

from __future__ import annotations

from pathlib import Path

from gpt_dist.config import Config
from gpt_dist.engine.callbacks.base import Callback
from gpt_dist.engine.callbacks.cadence import CheckpointEvery, EvalEvery, LogEvery, SlurmRequeue
from gpt_dist.engine.callbacks.console import Console
from gpt_dist.engine.callbacks.loss_curve import LossCurve, plot_loss_curve
from gpt_dist.engine.callbacks.metrics_files import MetricsFiles
from gpt_dist.engine.callbacks.multiple_choice import MultipleChoiceEval
from gpt_dist.engine.callbacks.speed import SpeedMonitor
from gpt_dist.engine.callbacks.wandb_logger import Wandb

__all__ = ["Callback", "CheckpointEvery", "Console", "EvalEvery", "LogEvery", "LossCurve", "MetricsFiles", "MultipleChoiceEval",
           "SlurmRequeue", "SpeedMonitor", "Wandb", "default_callbacks", "plot_loss_curve"]


def default_callbacks(cfg: Config, flops_per_token: float, peak_flops: float | None) -> list[Callback]:
    run_dir = Path(cfg.run_dir)
    cbs: list[Callback] = [
        SpeedMonitor(flops_per_token, peak_flops),
        LogEvery(cfg.log.every_steps),
        MetricsFiles(run_dir),
        LossCurve(run_dir, f"{run_dir.name} ({cfg.stage})"),
        Console(cfg.log.progress_bar),
        EvalEvery(cfg.eval.every_steps),
        CheckpointEvery(cfg.checkpoint.every_steps),
        SlurmRequeue(),
    ]
    if cfg.eval.mc:
        cbs.append(MultipleChoiceEval(cfg.eval.mc, cfg.eval.mc_every_steps, cfg.train.micro_batch_size))
    if cfg.log.wandb.mode != "disabled":
        w = cfg.log.wandb
        cbs.append(Wandb(w.mode, w.project, w.name))
    return cbs
