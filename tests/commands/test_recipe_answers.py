"""The README's sample recipe at its documented lengths, as a new user runs it (the main job,
then CPT -> SFT -> DPO -> export -> generate / chat, via tools/bench_recipe.sh): the SFT model
and the DPO export answer the README's two prompts correctly, the CPT model continues the
persona's log book, and chat prints a reply per message.
(tests/finetune/test_recipe.py checks the same chain's mechanics on two-step runs.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 280 s at load 1 (docs/benchmarks.md); the limit allows a busy machine
def test_sample_recipe_answers_the_readme_prompts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT", "GPT_DIST_GPT2_VOCAB")}
    env.update(OMP_NUM_THREADS="2", GPT_DIST=str(Path(sys.executable).with_name("gpt-dist")), PYTHON=sys.executable)
    p = subprocess.run([str(REPO / "tools" / "bench_recipe.sh"), str(tmp_path)], capture_output=True, text=True,
                       env=env, timeout=3500)
    assert p.returncode == 0, p.stderr[-3000:]
    # generate --chat on exports/dpo-hf: DPO with the NLL term on the chosen replies
    # (finetune.dpo_nll_weight) keeps the SFT model's right answers
    answers = (tmp_path / "generate_chat.txt").read_text().splitlines()
    assert answers == ["The capital of France is Paris.", "2 plus 3 is 5."]
    # generate --model runs/cpt/ckpt: the prompt, then words of the persona's log book, not blanks
    continuation = (tmp_path / "generate_cpt.txt").read_text()
    assert continuation.startswith("Day 3 of the voyage.") and len(continuation.split()) > 12
    # chat on runs/sft/ckpt (before DPO) with piped input: the SFT model answers both correctly
    assert (tmp_path / "chat.txt").read_text().splitlines() == ["The capital of France is Paris.", "2 plus 3 is 5."]
    times = dict(line.rsplit("\t", 1) for line in (tmp_path / "times.tsv").read_text().splitlines()[1:])
    assert len(times) == 13
