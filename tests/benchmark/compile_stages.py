"""Run as a script: `gpt-dist bench --compile` on a tiny model for the bare model and every
ZeRO stage in one process (DeepSpeed initialises torch.distributed once for all of them and
the compiled block graph is reused); prints one JSON object per line."""

import json
import sys

from gpt_dist.benchmark.training import BenchSettings, run_training_benchmark
from gpt_dist.config import ModelConfig, resolve_model_config

STAGES = [None, 0, 1, 2, 3]

if __name__ == "__main__":
    for stage in STAGES:
        model = resolve_model_config(ModelConfig(preset="tiny", loss_chunk_tokens=8))
        r = run_training_benchmark(BenchSettings(model=model, seq_len=16, micro_batch=2, steps=2, warmup=1,
                                                 zero_stage=stage, compile="both"))
        print(json.dumps(r), file=sys.__stdout__, flush=True)
