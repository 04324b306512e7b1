"""Optional: lm-eval-harness on a directory written by `gpt-dist convert to-hf`.

Runs only where the `lm_eval` package is installed (pip install 'lm_eval[hf]'); it is not a
dependency of gpt_dist. Checks that lm-eval's Hugging Face model class loads the export and
gives the same log-likelihoods as our own scoring, and that the README's lm_eval command on a
local HellaSwag-format task reports our `acc` and `acc_norm_chars` as its `acc` and `acc_norm`.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip(
    "lm_eval",
    reason="lm-eval-harness is not installed (optional: pip install 'lm_eval[hf]'); the lm_eval tests are skipped",
)

from gpt_dist.cli import main
from gpt_dist.evaluation.multiple_choice import encode_item, ending_loglikelihoods, read_mc_file

EXPORT = "gpt-dist convert to-hf runs/sample/ckpt exports/sample-hf"
# Exactly as docs/eval_bench.md shows them (the task file and the command).
TASK_YAML = """\
task: mc_local
dataset_path: json
dataset_kwargs:
  data_files:
    validation: hellaswag_val.jsonl
validation_split: validation
output_type: multiple_choice
doc_to_text: ctx
doc_to_choice: endings
doc_to_target: label
metric_list:
  - metric: acc
  - metric: acc_norm
"""
LM_EVAL = "lm_eval --model hf --model_args pretrained=exports/sample-hf --include_path lm_eval_tasks --tasks mc_local --device cpu --batch_size 8 --output_path lm_eval_out"


@pytest.fixture(scope="module")
def exported(workspace) -> Path:
    out = workspace / "exports" / "sample-hf"
    if not out.exists():
        cwd = os.getcwd()
        os.chdir(workspace)
        try:
            assert main(shlex.split(EXPORT)[1:]) == 0
        finally:
            os.chdir(cwd)
    return out


def test_lm_eval_hf_model_scores_loglikelihoods_as_we_do(workspace, exported, tiny_model, gpt2_tokenizer):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(exported), device="cpu", batch_size=4, dtype="float32")
    items = read_mc_file(workspace / "hellaswag_val.jsonl")
    requests, ours = [], []
    for item in items:
        requests += [Instance("loglikelihood", doc={}, arguments=(item.ctx, " " + e), idx=j)
                     for j, e in enumerate(item.endings)]
        ours += encode_item(item, gpt2_tokenizer, tiny_model.config.block_size)
    theirs = [ll for ll, _greedy in lm.loglikelihood(requests)]
    expected = ending_loglikelihoods(tiny_model, ours, torch.device("cpu"))
    assert theirs == pytest.approx(expected, abs=1e-4)


def test_readme_lm_eval_command_agrees_with_gpt_dist_eval(workspace, exported, monkeypatch, capsys):
    exe = shutil.which("lm_eval") or str(Path(sys.executable).parent / "lm_eval")
    (workspace / "lm_eval_tasks").mkdir(exist_ok=True)
    (workspace / "lm_eval_tasks" / "mc_local.yaml").write_text(TASK_YAML, encoding="utf-8")
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    p = subprocess.run([exe, *shlex.split(LM_EVAL)[1:]], cwd=workspace, env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    (results_file,) = (workspace / "lm_eval_out").rglob("results*.json")
    theirs = json.loads(results_file.read_text())["results"]["mc_local"]
    monkeypatch.chdir(workspace)
    assert main(["eval", "--model", "exports/sample-hf", "--mc", "hellaswag_val.jsonl", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)["mc"]
    assert theirs["acc,none"] == pytest.approx(ours["acc"])
    assert theirs["acc_norm,none"] == pytest.approx(ours["acc_norm_chars"])
