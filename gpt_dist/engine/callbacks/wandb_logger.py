"""wandb, rank 0: online when an API key is available, offline otherwise, or disabled."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from gpt_dist.engine.callbacks.base import Callback

log = logging.getLogger(__name__)


class Wandb(Callback):
    priority = -100  # finished last, after the final evaluation is logged
    def __init__(self, mode: str, project: str, name: str | None):
        self.mode, self.project, self.run_name = mode, project, name
        self.run = None

    def on_train_start(self, trainer):
        if not trainer.dist.is_main:
            return
        import wandb

        mode = self.mode
        if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _wandb_logged_in()):
            log.warning("log.wandb.mode=online but no WANDB_API_KEY; logging offline to %s (wandb sync later)",
                        trainer.run_dir)
            mode = "offline"
        self.run = wandb.init(mode=mode, project=self.project, name=self.run_name, dir=str(trainer.run_dir),
                              config=trainer.cfg.to_dict(), resume="allow")

    def on_log(self, trainer, metrics):
        if self.run is not None:
            self.run.log({f"train/{k}": v for k, v in metrics.items() if v is not None and k != "step"},
                         step=metrics["step"])

    def on_eval(self, trainer, metrics):
        if self.run is not None:
            split = metrics.get("split", "val")
            self.run.log({f"{split}/{k}": v for k, v in metrics.items() if k not in ("step", "split")},
                         step=metrics["step"])

    def on_train_end(self, trainer, result):
        if self.run is not None:
            self.run.finish()


def _wandb_logged_in() -> bool:
    netrc = Path(os.path.expanduser("~/.netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text()
