"""Evaluation and checkpoint cadence, and SLURM requeue after a stop signal. Evaluation and
checkpointing are collectives: these run on every rank."""

from __future__ import annotations

import math
import os
import subprocess

from gpt_dist.engine.callbacks.base import Callback


class EvalEvery(Callback):
    """Validation every eval.every_steps steps, and once more at the end of a finished run."""

    priority = 50  # before the checkpoint of the same step, whose metadata records the val loss

    def __init__(self, every_steps: int):
        self.every = every_steps

    def on_step_end(self, trainer, outcome):
        if trainer.val_loader is not None and trainer.state.step % self.every == 0:
            trainer.evaluate()

    def on_train_end(self, trainer, result):
        finished = trainer.state.step >= trainer.total_steps
        if finished and trainer.val_loader is not None and trainer.state.step % self.every != 0:
            trainer.evaluate()


class CheckpointEvery(Callback):
    """A checkpoint every checkpoint.every_steps steps (the loop itself saves when it stops)."""

    priority = 40

    def __init__(self, every_steps: int):
        self.every = every_steps

    def on_step_end(self, trainer, outcome):
        if trainer.state.step % self.every == 0:
            trainer.save()


class SlurmRequeue(Callback):
    """SIGUSR1 inside a SLURM job (its warning signal before the time limit): requeue the job,
    which then resumes from the checkpoint just saved."""

    priority = 60  # before the end-of-run summary reports it

    def on_train_end(self, trainer, result):
        job = os.environ.get("SLURM_JOB_ID")
        if not (result.stopped_by_signal == "SIGUSR1" and job and trainer.dist.is_main):
            return
        r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        trainer.event("requeue", job_id=job, ok=r.returncode == 0, stderr=r.stderr.strip())


class LogEvery(Callback):
    """A train row every log.every_steps steps and at the last one: the step's loss and the
    objective's metrics (already reduced over the ranks by the step's own all-reduce)."""

    priority = 90  # the row exists before evaluation or a checkpoint of the same step

    def __init__(self, every_steps: int):
        self.every = every_steps

    def on_step_end(self, trainer, outcome):
        step = trainer.state.step
        if step % self.every != 0 and step != trainer.total_steps:
            return
        grad_norm = trainer.engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else None
        trainer.report_log(dict(
            step=step, tokens=trainer.state.tokens, loss=outcome.loss, lr=outcome.lr,
            grad_norm=grad_norm if grad_norm is None or math.isfinite(grad_norm) else None,
            trained_tokens=int(outcome.trained_tokens), step_tokens=int(outcome.tokens),
            skipped_batches=trainer.state.skipped_batches, **outcome.metrics,
        ))
