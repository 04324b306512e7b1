"""The fine-tuning recipe of docs/finetune.md, run command by command as written in a
fresh directory: sample data -> CPT -> SFT -> DPO -> Hugging Face export -> generate / chat.

The training commands run as written plus `--set` overrides that shorten them to a couple of
steps with small batches (the full lengths take minutes on a CPU); everything else (configs,
paths, init_from chain, template hand-over, export) is exactly the documented one.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SHORT = ["--set", "train.max_steps=2", "--set", "train.micro_batch_size=1",
         "--set", "eval.batches=1", "--set", "log.progress_bar=false"]

PRETRAIN = [
    "gpt-dist prepare --sample --output data/sample",
    "gpt-dist train configs/sample_cpu.yaml",
]
RECIPE = [
    "python -m gpt_dist.finetune.sample_data data/finetune_sample",
    "gpt-dist prepare --input data/finetune_sample/cpt --output data/cpt_persona --seq-len 256 --val-fraction 0.05",
    "gpt-dist train configs/cpt_sample.yaml",
    "gpt-dist train configs/cpt_sample.yaml --set lora.r=8 --set run_dir=runs/cpt-lora",
    "gpt-dist convert to-hf runs/cpt-lora/ckpt exports/cpt-lora-hf",
    "gpt-dist train configs/sft_sample.yaml",
    "gpt-dist train configs/dpo_sample.yaml",
    "gpt-dist convert to-hf runs/dpo/ckpt exports/dpo-hf",
    'gpt-dist generate --model exports/dpo-hf --chat --prompt "What is the capital of France?" "What is 2 plus 3?" --temperature 0',
    'gpt-dist generate --model runs/cpt/ckpt --prompt "Day 3 of the voyage." --max-new-tokens 40 --seed 1',
    "gpt-dist chat --model runs/sft/ckpt --temperature 0",
]


def run(command: str, cwd: Path, stdin: str | None = None) -> str:
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    else:
        argv[0] = str(BIN / argv[0])
    if argv[1] == "train":
        # two 256-token sequences (SFT rows, DPO pairs) a step, in each stage's own batch unit
        finetune = any(c in argv[2] for c in ("sft_sample", "dpo_sample"))
        argv += SHORT + ["--set", "train.global_batch_size=2" if finetune else "train.global_batch_tokens=512"]
    # A fresh shell: no process-group variables from an in-process training run of this session.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    r = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, f"{command}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("recipe")
    shutil.copytree(REPO / "configs", work / "configs")
    for command in PRETRAIN:
        run(command, work)
    return work


def test_recipe_runs_as_documented(recipe_dir):
    outputs = {}
    for command in RECIPE[:-1]:
        outputs[command] = run(command, recipe_dir)
    chat_out = run(RECIPE[-1], recipe_dir, stdin="What is the capital of France?\n/reset\nWhat is 2 plus 3?\n")

    # each stage started from the previous one, with a fresh optimizer
    for stage, source in (("cpt", "runs/sample/ckpt"), ("sft", "runs/cpt/ckpt"), ("dpo", "runs/sft/ckpt")):
        events = [json.loads(line) for line in (recipe_dir / "runs" / stage / "events.jsonl").read_text().splitlines()]
        assert {"event": "init_from", "path": source}.items() <= next(e for e in events if e["event"] == "init_from").items()
    dpo_metrics = [json.loads(line) for line in (recipe_dir / "runs/dpo/metrics.jsonl").read_text().splitlines()]
    assert "reward_accuracy" in dpo_metrics[0]
    # the SFT template went through DPO into the export
    hf_config = json.loads((recipe_dir / "exports/dpo-hf/tokenizer_config.json").read_text())
    from gpt_dist.finetune.chat_template import DEFAULT_CHAT_TEMPLATE

    assert DEFAULT_CHAT_TEMPLATE in (hf_config.get("chat_template") or (recipe_dir / "exports/dpo-hf/chat_template.jinja").read_text())
    # (two optimizer steps teach the model nothing: only the mechanics are checked here; what a
    # trained model answers is tests/finetune/test_sft.py's job)
    assert outputs[RECIPE[8]].count("\n") >= 2  # one answer per prompt, each ending a line
    assert outputs[RECIPE[9]].startswith("Day 3 of the voyage.")
    # the LoRA CPT run trained adapters only, and its export is a plain GPT-2 with merged weights
    events = [json.loads(line) for line in (recipe_dir / "runs/cpt-lora/events.jsonl").read_text().splitlines()]
    assert next(e for e in events if e["event"] == "start")["lora_trainable_params"] == 65536
    from safetensors import safe_open

    with safe_open(recipe_dir / "exports/cpt-lora-hf/model.safetensors", "pt") as f:
        assert "transformer.h.0.attn.c_attn.weight" in f.keys() and not any("lora" in k for k in f.keys())
    assert chat_out.count("\n") >= 2  # a reply per message
