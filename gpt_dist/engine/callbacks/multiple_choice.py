"""Multiple-choice accuracy during training (OLMo-core's in-loop downstream evaluation): every
N steps, score a HellaSwag-format file (the `gpt-dist eval --mc` format,
gpt_dist.evaluation.multiple_choice) with the weights being trained, and log acc / acc_norm
as an evaluation row with split "mc".

    eval: {mc: data/mc_sample.jsonl, mc_every_steps: 100}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gpt_dist.engine.callbacks.base import Callback


class MultipleChoiceEval(Callback):
    priority = 45  # beside validation, before the checkpoint of the same step

    def __init__(self, path: str | Path, every_steps: int, micro_batch: int):
        from gpt_dist.evaluation.multiple_choice import read_mc_file

        self.path, self.every, self.micro_batch = Path(path), every_steps, micro_batch
        self.items = read_mc_file(self.path)
        self.history: list[dict[str, Any]] = []  # every score so far, saved with the checkpoint

    def on_step_end(self, trainer, outcome):
        if trainer.state.step % self.every == 0:
            self.score(trainer)

    def on_train_end(self, trainer, result):
        if result.step >= trainer.total_steps and trainer.state.step % self.every != 0:
            self.score(trainer)

    @torch.no_grad()
    def score(self, trainer) -> dict[str, Any]:
        from gpt_dist.evaluation.multiple_choice import score_items

        engine = trainer.engine
        # ZeRO-3 needs every rank in every forward: each rank scores all items (the counts summed
        # over ranks keep the same ratios); otherwise the items are split over the ranks.
        split = engine.zero_optimization_stage() < 3
        engine.eval()
        try:
            res = score_items(engine.module, trainer.tokenizer, self.items, trainer.dist.device,
                              micro_batch=self.micro_batch, precision=trainer.cfg.train.precision,
                              rank=trainer.dist.rank if split else 0, world_size=trainer.dist.world_size if split else 1)
        finally:
            engine.train()
        metrics = dict(split="mc", step=trainer.state.step, tokens=trainer.state.tokens, acc=res["acc"],
                       acc_norm=res["acc_norm"], items=len(self.items))
        self.history.append(metrics)
        trainer.report_eval(metrics)
        return metrics

    def state_dict(self):
        return {"history": self.history}

    def load_state_dict(self, state):
        self.history = list(state.get("history", []))
