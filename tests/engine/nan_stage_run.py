"""Run by test_nonfinite.py in its own process: pre-training whose loss is NaN on chosen
micro-batches (counted from 0), to check the loop skips them and stops after too many."""

import json
import sys

import torch

from gpt_dist.config import load_config
from gpt_dist.engine.stages import LanguageModeling
from gpt_dist.engine.trainer import NonFiniteLossError, train


class NaNAt(LanguageModeling):
    def __init__(self, bad: set[int]):
        self.bad, self.calls = bad, 0

    def loss(self, model, batch):
        loss, extra = super().loss(model, batch)
        if self.calls in self.bad:
            loss = loss * torch.tensor(float("nan"))
        self.calls += 1
        return loss, extra


if __name__ == "__main__":
    cfg = load_config([sys.argv[1]], sys.argv[3:])
    try:
        result = train(cfg, stage=NaNAt({int(x) for x in sys.argv[2].split(",")}))
        print(json.dumps({"ok": True, "step": result.step}))
    except NonFiniteLossError as e:
        print(json.dumps({"ok": False, "error": str(e)}))
