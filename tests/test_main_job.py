"""The README's main job, run as a new user would: the sample shards, then the sample run,
with no GPT_DIST_GPT2_VOCAB (the GPT-2 vocabulary ships with the package)."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

PREPARE = "gpt-dist prepare --sample --output data/sample"
TRAIN = "gpt-dist train configs/sample_cpu.yaml"
TRAIN_ZERO3 = "gpt-dist train configs/sample_cpu.yaml --set run_dir=runs/zero3 --set engine.zero_stage=3 --set train.max_steps=8"


def sh(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(cmd)
    argv[0] = sys.executable if argv[0] == "python" else str(BIN / argv[0])
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env.pop("GPT_DIST_GPT2_VOCAB", None)
    # About 40 s for prepare + train on an idle 2-core machine (docs/benchmarks.md); the timeout leaves
    # room for a machine several times slower than that.
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# The README's data, conversion and evaluation lines that need more than the main job: each
# runs as written, on inputs the README makes first (the sample run, the sample inputs, an export).
OFFLINE = [
    "python -m gpt_dist.data.sample_inputs .",
    "gpt-dist prepare configs/data/example.yaml --seq-len 256",
    "gpt-dist train-tokenizer --input corpus.txt --kind sentencepiece --vocab-size 400 --output tokenizer",
    "gpt-dist prepare --input corpus.txt --txt-unit paragraph --tokenizer sentencepiece --tokenizer-path tokenizer --seq-len 64 --val-fraction 0.1 --output data/mine",  # noqa: E501
    "gpt-dist convert to-hf runs/sample/ckpt exports/sample-hf",
    "gpt-dist convert to-hf runs/sample/ckpt exports/sample-hf-bf16 --tag step_00000024 --dtype bf16",
    "gpt-dist convert from-hf exports/sample-hf runs/from-hf/ckpt",
    "gpt-dist eval --model runs/sample/ckpt --mc hellaswag_val.jsonl --json",
]


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    """A fresh folder holding configs/ only, after the README's two main-job commands."""
    work = tmp_path_factory.mktemp("main_job")
    shutil.copytree(REPO / "configs", work / "configs")
    p = sh(PREPARE, work)
    assert p.returncode == 0, p.stderr[-3000:]
    p = sh(TRAIN, work)
    assert p.returncode == 0, p.stderr[-3000:]
    return work, p


@pytest.mark.slow
def test_sample_pretraining_run(main_job):
    tmp_path, p = main_job
    for banner in ("Setting accelerator to CPU", "built successfully"):  # DeepSpeed's, filtered
        assert banner not in p.stdout + p.stderr
    run = tmp_path / "runs" / "sample"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    assert train[-1]["step"] == 24
    assert train[-1]["loss"] < train[0]["loss"] - 2.0
    assert val and val[-1]["loss"] < 8.0
    assert (run / "loss_curve.png").is_file()
    assert (run / "ckpt" / "step_00000024" / "COMPLETE").is_file()

    p = sh(TRAIN_ZERO3, tmp_path)  # the same config under ZeRO-3 in one process
    assert p.returncode == 0, p.stderr[-3000:]
    assert "FutureWarning" not in p.stderr  # torch's deprecations inside DeepSpeed's ZeRO-3 collectives
    rows = [json.loads(x) for x in (tmp_path / "runs" / "zero3" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"][-1] == 8


@pytest.mark.slow
def test_readme_data_conversion_and_eval_lines_run_offline(main_job):
    work, _ = main_job
    out = {}
    for cmd in OFFLINE:
        p = sh(cmd, work)
        assert p.returncode == 0, f"{cmd}\n{p.stderr[-3000:]}"
        out[cmd] = p.stdout
    from gpt_dist.data.shards import read_manifest

    example = read_manifest(work / "data/example/train")
    assert example.filters["language (py3langid)"]["reasons"] == {"lang_de": 1}  # the German document
    assert example.filters["word list (profanity)"]["dropped"] == 1 and example.filters["exact dedup"]["dropped"] == 1
    assert read_manifest(work / "data/example/val").sequences >= 1
    assert read_manifest(work / "data/mine/train").tokenizer["kind"] == "sentencepiece"
    assert (work / "exports/sample-hf/model.safetensors").is_file() and (work / "runs/from-hf/ckpt/latest").is_file()
    mc = json.loads(out[OFFLINE[-1]])["mc"]
    assert mc["items"] == 40 and 0.0 <= mc["acc"] <= 1.0
