"""Several `gpt-dist train` runs one after the other in one launch of the ranks, for
test_training.py's reference runs: each rank starts Python, torch, DeepSpeed and its process
group once, not once per run.

    python tests/rank_launcher.py --nproc 2 tests/engine/train_runs.py RUNS.json

RUNS.json is a list of `gpt-dist train` argument lists (["train", CONFIG, "--set", ...]); each
runs through gpt_dist.cli.main as the command does. The first that fails ends the launch with
its exit status."""

import json
import sys
from pathlib import Path

from gpt_dist.cli import main

if __name__ == "__main__":
    local_rank, runs = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())  # --local_rank=R (the launcher's)
    for argv in runs:
        status = main([local_rank, *argv])
        if status != 0:
            sys.exit(status)
