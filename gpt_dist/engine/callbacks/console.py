"""What a run prints, rank 0: a tqdm bar that starts at the resumed step, one readable line
per log interval written above the bar (log records go through tqdm too, so nothing breaks
it), events as sentences, and a summary at the end."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from gpt_dist.engine.callbacks.base import Callback

log = logging.getLogger("gpt_dist.train")


def si(x: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def duration(seconds: float) -> str:
    """95 -> '1m35s', 7300 -> '2h01m'."""
    s = int(round(max(seconds, 0)))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def log_line(metrics: dict[str, Any], total_steps: int, eta_s: float | None) -> str:
    """One line for a log interval: step, loss, lr, tokens/s, ETA."""
    parts = [f"step {metrics['step']}/{total_steps}", f"loss {metrics['loss']:.4f}", f"lr {metrics['lr']:.2e}"]
    if metrics.get("tokens_per_s") is not None:
        parts.append(f"{si(metrics['tokens_per_s'])} tok/s")
    if eta_s is not None:
        parts.append(f"ETA {duration(eta_s)}")
    return " | ".join(parts)


# Event name -> sentence, filled from the event's fields (events.jsonl keeps the fields).
_EVENT_TEXT = {
    "start": "training {total_steps} steps: global batch {global_batch_size} {unit}s = {micro_batch_size} per "
             "micro-batch x {grad_accum} accumulation x {world_size} ranks",
    "fresh_start": "no checkpoint found in {checkpoint_dir}, starting fresh",
    "resumed": "resumed from {tag} at step {step} on {world_size} rank(s)",
    "init_from": "starting weights from {path}",
    "already_complete": "run already complete: {step} of {total_steps} steps done ({checkpoint_dir}); nothing to train",
    "checkpoint": "checkpoint {tag} saved",
    "signal": "{signal}: saving and stopping after step {step}",
    "exit_after_steps": "stopping after {steps} steps of this job (train.exit_after_steps); rerun to continue",
    "nonfinite_loss_skipped": "NaN/inf loss: a step's batch skipped on every rank ({skipped_batches} so far)",
    "stopped_nonfinite": "stopping: {consecutive} NaN/inf losses in a row",
    "schedule_changed": "schedule changed on resume ({changes}): continuing on the new one "
                        "(checkpoint.allow_schedule_change)",
    "requeue": "SLURM job {job_id} requeued (scontrol ok: {ok})",
}


def describe_event(event: dict[str, Any]) -> str:
    """An event as a sentence for the console."""
    name = event["event"]
    if name == "finished":
        return f"finished: {event['step']} steps, {si(event['tokens'])} tokens"
    text = _EVENT_TEXT.get(name)
    if text is not None:
        try:
            text = text.format(**event)
        except KeyError:
            text = None
    if text is None:
        fields = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "step"))
        text = f"{name.replace('_', ' ')} at step {event['step']}" + (f": {fields}" if fields else "")
    if name == "start" and event.get("lora_trainable_params"):
        text += f", {event['lora_trainable_params']:,} LoRA parameters train"
    if name == "resumed" and event.get("universal"):
        text += " through the universal format (world size changed)"
    return text


class Console(Callback):
    """progress_bar: a tqdm bar with the log lines above it; otherwise the log lines alone."""

    priority = -10

    def __init__(self, progress_bar: bool):
        self.progress_bar = progress_bar
        self.bar = None
        self._redirect = contextlib.ExitStack()
        self._t0 = time.perf_counter()
        self._start_step = 0
        self._last_train: dict[str, Any] = {}
        self._last_val: dict[str, Any] = {}

    def on_train_start(self, trainer):
        self._t0, self._start_step = time.perf_counter(), trainer.state.step
        if not (trainer.dist.is_main and self.progress_bar):
            return
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.bar = tqdm(total=trainer.total_steps, initial=trainer.state.step, unit="step", dynamic_ncols=True,
                        mininterval=1.0, leave=True)
        # log records (ours and DeepSpeed's, which has its own handler) are written above the bar
        self._redirect.enter_context(logging_redirect_tqdm(loggers=[logging.getLogger(), logging.getLogger("DeepSpeed")]))

    def on_step_end(self, trainer, outcome):
        if self.bar is not None:
            self.bar.update(trainer.state.step - self.bar.n)

    def on_log(self, trainer, metrics):
        self._last_train = metrics
        if not trainer.dist.is_main:
            return
        done = trainer.state.step - self._start_step
        eta = None
        if done > 0:
            eta = (time.perf_counter() - self._t0) / done * (trainer.total_steps - trainer.state.step)
        self._write(log_line(metrics, trainer.total_steps, eta))

    def on_eval(self, trainer, metrics):
        if metrics.get("split", "val") == "val":
            self._last_val = metrics
        if trainer.dist.is_main:
            shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in metrics.items() if k not in ("step", "tokens", "split"))
            self._write(f"step {metrics['step']}: {metrics.get('split', 'val')} {shown}")

    def on_event(self, trainer, event):
        if trainer.dist.is_main:
            self._write(describe_event(event))

    def _write(self, text: str) -> None:
        log.info("%s", text)  # through tqdm's handler while the bar is up

    def on_train_end(self, trainer, result):
        if self.bar is not None:
            self.bar.update(trainer.state.step - self.bar.n)
            self.bar.close()  # printed once, complete
            self.bar = None
        self._redirect.close()
        if trainer.dist.is_main:
            log.info("%s", summary(trainer, result, self._last_train, self._last_val, time.perf_counter() - self._t0))


def summary(trainer, result, train: dict[str, Any], val: dict[str, Any], seconds: float) -> str:
    """The end-of-run report: losses, tokens, time, and where everything is."""
    state = "complete" if result.step >= trainer.total_steps else f"stopped at step {result.step} of {trainer.total_steps}"
    lines = [f"run {state}: {result.step - trainer.start_step} steps in {duration(seconds)} this job, "
             f"{si(result.tokens)} tokens in all"]
    losses = []
    if train:
        losses.append(f"train loss {train['loss']:.4f} (step {train['step']})")
    if val:
        losses.append(f"val loss {val['loss']:.4f} (step {val['step']})")
    if losses:
        lines.append("  " + ", ".join(losses))
    if trainer.last_checkpoint is not None:
        lines.append(f"  checkpoint  {trainer.last_checkpoint}")
    lines.append(f"  metrics     {trainer.run_dir / 'metrics.jsonl'}")
    plot = trainer.run_dir / "loss_curve.png"
    if plot.is_file():
        lines.append(f"  plot        {plot}")
    return "\n".join(lines)
