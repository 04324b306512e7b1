"""The callback contract: everything a run does besides batch -> objective -> engine.

The loop calls every hook on every rank, in order of `priority` (highest first); a callback
that writes files or prints does so on rank 0 only (`trainer.dist.is_main`), and one that runs
collectives (evaluation, checkpointing) must run them on every rank. What `state_dict()`
returns (JSON-serialisable) is saved with each checkpoint under `name` and handed to
`load_state_dict()` on resume.

    class PrintLoss(Callback):
        def on_log(self, trainer, metrics):
            if trainer.dist.is_main:
                print(metrics["step"], metrics["loss"])

    train(cfg, callbacks=[PrintLoss()])
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpt_dist.engine.trainer import StepOutcome, Trainer, TrainResult


class Callback:
    # Higher runs first: the speed monitor fills tokens/s into a log row before it is written.
    priority: int = 0

    @property
    def name(self) -> str:
        """Key of this callback's state in a checkpoint."""
        return type(self).__name__

    def on_train_start(self, trainer: Trainer) -> None:
        """After set-up and any resume, before the first step (trainer.state.step may be > 0)."""

    def on_step_end(self, trainer: Trainer, outcome: StepOutcome) -> None:
        """After each applied optimizer step (trainer.state.step counts it already)."""

    def on_log(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """Every log.every_steps steps and at the last one; `metrics` may be extended in place
        by a higher-priority callback for the ones after it."""

    def on_eval(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """After an evaluation: metrics hold split ("val" or the evaluator's name), step, tokens."""

    def on_checkpoint(self, trainer: Trainer, tag_dir: Path) -> None:
        """After a checkpoint is complete on every rank."""

    def on_event(self, trainer: Trainer, event: dict[str, Any]) -> None:
        """Something worth recording happened: {"event": name, "step": n, ...fields}."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """Once, after the last step, the final checkpoint and the final evaluation."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
