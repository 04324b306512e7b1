"""`gpt-dist eval` as the README runs it: loss on a shard set equals the mean token loss computed
directly with the model over the same sequences, on one rank and on two; multiple choice from a
checkpoint and from its Hugging Face export agree with the in-memory model; bad input."""

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gpt_dist.cli import main
from gpt_dist.evaluation.multiple_choice import read_mc_file, score_items

BIN = Path(sys.executable).parent

# Exactly as docs/eval_bench.md shows them.
EVAL_DATA = "gpt-dist eval --model runs/sample/ckpt --data data/sample --json"
EVAL_TWO_RANKS = "torchrun --nproc_per_node 2 -m gpt_dist eval --model runs/sample/ckpt --data data/sample --json"
EVAL_MC = "gpt-dist eval --model runs/sample/ckpt --mc hellaswag_val.jsonl --json"
EXPORT = "gpt-dist convert to-hf runs/sample/ckpt exports/sample-hf"
EVAL_MC_HF = "gpt-dist eval --model exports/sample-hf --mc hellaswag_val.jsonl --json"


def run_json(command: str, cwd: Path, monkeypatch, capsys) -> dict:
    monkeypatch.chdir(cwd)
    argv = shlex.split(command)
    assert argv[0] == "gpt-dist"
    assert main(argv[1:]) == 0
    return json.loads(capsys.readouterr().out)


def direct_mean_loss(model, windows: torch.Tensor) -> tuple[float, int]:
    """Mean over every target token of -log softmax(logits)[next token]; windows (N, T + 1)."""
    with torch.no_grad():
        logp = F.log_softmax(model(windows[:, :-1]).double(), dim=-1)
    nll = -logp.gather(-1, windows[:, 1:, None])
    return nll.sum().item() / nll.numel(), nll.numel()


def test_readme_eval_data_equals_direct_mean_token_loss(workspace, tiny_model, val_windows, monkeypatch, capsys):
    r = run_json(EVAL_DATA, workspace, monkeypatch, capsys)
    # 24 sequences, micro-batch 8, one rank: three full micro-batches, every sequence once.
    expected, n = direct_mean_loss(tiny_model, val_windows)
    assert r["source"] == "gpt_dist" and r["world_size"] == 1
    assert (r["sequences"], r["batches"], r["tokens"]) == (24, 3, n)
    assert r["loss"] == pytest.approx(expected, rel=1e-5)
    assert r["perplexity"] == pytest.approx(torch.tensor(expected).exp().item(), rel=1e-5)
    assert r["data"] == "data/sample/val"


@pytest.mark.slow
def test_two_ranks_sum_their_shares(workspace, tiny_model, val_windows):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = shlex.split(EVAL_TWO_RANKS)
    argv = [str(BIN / argv[0]), f"--master_port={port}", *argv[1:]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(argv, cwd=workspace, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout)  # rank 0 alone prints
    # Each rank evaluates its 12 of the 24 sequences (every other one: a micro-batch of 8, then 4);
    # rank 0 reports the sums over every sequence of the set.
    expected, n = direct_mean_loss(tiny_model, val_windows)
    assert r["world_size"] == 2 and r["sequences"] == 24 and r["batches"] == 4 and r["tokens"] == n
    assert r["loss"] == pytest.approx(expected, rel=1e-5)


def test_every_sequence_counts_when_the_micro_batch_does_not_divide_the_set(workspace, tiny_model, val_windows,
                                                                           monkeypatch, capsys):
    r = run_json(EVAL_DATA + " --micro-batch 5", workspace, monkeypatch, capsys)
    # 24 sequences in micro-batches of 5: four full ones and a last one of 4, none dropped.
    expected, n = direct_mean_loss(tiny_model, val_windows)
    assert (r["sequences"], r["batches"], r["tokens"]) == (24, 5, n)
    assert r["loss"] == pytest.approx(expected, rel=1e-5)


def test_ranks_split_the_set_without_overlap(workspace, val_windows):
    from gpt_dist.data.shards import read_manifest
    from gpt_dist.evaluation.lm_loss import every_sequence

    val = workspace / "data/sample/val"
    m = read_manifest(val)
    seen = [torch.cat([b["input_ids"], b["labels"][:, -1:]], dim=1)
            for rank in range(3) for b in every_sequence(val, m, micro_batch=7, rank=rank, world_size=3)]
    rows = torch.cat(seen)
    assert len(rows) == 24 and {tuple(w.tolist()) for w in rows} == {tuple(w.tolist()) for w in val_windows}
    assert len(list(every_sequence(val, m, micro_batch=7, max_batches=2))) == 2


def test_readme_mc_from_checkpoint_and_its_hf_export(workspace, tiny_model, gpt2_tokenizer, monkeypatch, capsys):
    expected = score_items(tiny_model, gpt2_tokenizer, read_mc_file(workspace / "hellaswag_val.jsonl"),
                           torch.device("cpu"))
    r = run_json(EVAL_MC, workspace, monkeypatch, capsys)
    assert r["mc"] == {"file": "hellaswag_val.jsonl", **expected}
    assert r["mc"]["items"] == 5
    assert main(shlex.split(EXPORT)[1:]) == 0
    capsys.readouterr()
    r = run_json(EVAL_MC_HF, workspace, monkeypatch, capsys)
    assert r["source"] == "huggingface"
    assert r["mc"] == {"file": "hellaswag_val.jsonl", **expected}


def test_text_output_and_bad_input(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    assert main(["eval", "--model", "runs/sample/ckpt", "--data", "data/sample", "--batches", "1"]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "512 tokens (8 sequences)" in out
    assert main(["eval", "--model", "runs/sample/ckpt"]) == 2
    assert "give --data SHARDS_DIR" in capsys.readouterr().err
    assert main(["eval", "--model", "runs/sample/ckpt", "--data", "data/nothing"]) == 2
    assert "--data data/nothing: no manifest.json" in capsys.readouterr().err
    assert main(["eval", "--model", "runs/nothing", "--mc", "hellaswag_val.jsonl"]) == 2
    assert "runs/nothing" in capsys.readouterr().err


def test_sequences_longer_than_the_model_are_refused(workspace, hf_dir_of, monkeypatch, capsys):
    from gpt_dist.config import ModelConfig, resolve_model_config
    from gpt_dist.model.gpt import GPT

    short = GPT(resolve_model_config(ModelConfig(preset="tiny", block_size=32)))
    hf = hf_dir_of(short)
    monkeypatch.chdir(workspace)
    assert main(["eval", "--model", str(hf), "--data", "data/sample"]) == 2
    err = capsys.readouterr().err
    assert "sequences of 64 tokens, but the model's block_size is 32" in err
    assert "gpt-dist prepare --seq-len 32" in err
