"""`gpt-dist plan` from the command line: the README commands, --json, and exit status 2 on bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_dist.cli import main

# Exactly as docs/plan.md shows them.
README_COMMANDS = [
    "gpt-dist plan --model gpt2-xl --gpus 16 --gpu a100-80gb --tokens 3e10",
    "gpt-dist plan --model gpt2 --json",
    "gpt-dist plan --model gpt2-large --gpus 1 --gpu a100-40gb --zero-stage 0 --micro-batch 16",
    "gpt-dist plan --model gpt2-large --gpus 8 --gpu a100-80gb --tokens 10B --global-batch-tokens 524288",
    "gpt-dist plan --model gpt2-xl --gpus 8 --gpu a100-40gb --micro-batch 16 --activation-checkpointing",
]

JSON_KEYS = {
    "params", "non_embedding_params", "flops_per_token", "memory_per_gpu_gib", "train_days",
    "tokens_per_second", "chinchilla_tokens", "deepseek", "warnings",
}


def run_cli(command: str, capsys) -> tuple[int, str, str]:
    argv = command.split()
    assert argv[0] == "gpt-dist"
    rc = main(argv[1:])
    out, err = capsys.readouterr()
    return rc, out, err


def test_readme_table_for_gpt2_xl(capsys):
    rc, out, _ = run_cli(README_COMMANDS[0], capsys)
    assert rc == 0
    assert "1,557,611,200" in out
    assert "30.00B tokens in 1.79 days" in out  # 3e10 / (16 · 0.4 · 312e12 / 10,279,555,200) s
    for stage in "0123":
        assert any(line.strip().startswith(stage + " ") for line in out.splitlines())
    assert "WARNING" not in out


def test_readme_json_has_every_key(capsys):
    rc, out, _ = run_cli(README_COMMANDS[1], capsys)
    assert rc == 0
    plan = json.loads(out)  # exactly one JSON object, nothing else on stdout
    assert JSON_KEYS <= plan.keys()
    assert plan["params"] == 124_439_808
    assert set(plan["memory_per_gpu_gib"]) == {"0", "1", "2", "3"}
    for stage in plan["memory_per_gpu_gib"].values():
        assert {"model_states_gib", "activations_gib", "total_gib", "fits"} <= stage.keys()
    assert {"lr", "batch_tokens", "batch_sequences"} <= plan["deepseek"].keys()
    assert plan["gpus"] == 8 and plan["gpu"] == "h100-80gb" and plan["mfu"] == 0.4
    assert plan["tokens"] == plan["chinchilla_tokens"] == 20 * 124_439_808


def test_readme_plan_that_does_not_fit(capsys):
    rc, out, _ = run_cli(README_COMMANDS[2], capsys)
    assert rc == 0
    # 774,090,240 stored params · 16 B = 12.385 GB; activations 36·34·1024·16·1280 + 4·1024·16·1280
    # + 12·1024·16·50,257 = 25,669,140,480 + 83,886,080 + 9,880,928,256 bytes = 35.63e9 B; with the
    # states 48.02e9 B = 44.7 GiB, against the 40,960 MiB an A100-40GB reports.
    assert "WARNING: ZeRO stage 0 needs 44.7 GiB per GPU, more than the 40.0 GiB of one a100-40gb" in out
    # ... and it names the micro-batch that fits: (40 GiB - 12.385e9 B) / 2.227e9 B per sequence = 13.
    assert "--micro-batch 13 (the largest that fits with ZeRO stage 0)" in out


def test_readme_sizing_question_is_answered(capsys):
    """Micro-batch, accumulation, global batch, ZeRO stage with its reason, hours, lr beside GPT-2's."""
    rc, out, _ = run_cli(README_COMMANDS[3], capsys)
    assert rc == 0
    # 524,288 tokens / 1,024 = 512 sequences = 8 per GPU x 8 GPUs x 8 accumulation steps.
    assert "8 micro-batch x 8 GPUs x 8 accumulation steps = 512 sequences = 524,288 tokens per optimizer step" in out
    assert "train: {global_batch_tokens: 524288, micro_batch_size: 8, seq_len: 1024}  engine: {zero_stage: 1}" in out
    # ZeRO-0 fits too (28.1 GiB), but ZeRO-1 shards the optimizer states at the same traffic.
    assert "ZeRO stage     1 (ZeRO-1: the optimizer states sharded at no extra traffic over stage 0)" in out
    assert "  1             3.96       16.59       20.56  yes <" in out
    # 8 x 0.4 x 312e12 / 5.2028e9 = 191,906 tokens/s; 1e10 tokens = 52,109 s = 14.5 hours.
    assert "10.00B tokens in 14.5 hours" in out
    assert "learning rate    2.5e-04: what GPT-3 used at this size (6e-4 for 124M" in out
    assert "lr 0.00109" in out and "sweep it, do not trust it" in out
    assert "WARNING" not in out


def test_activation_checkpointing_switch_makes_a_batch_fit(capsys):
    rc, out, _ = run_cli(README_COMMANDS[4].replace(" --activation-checkpointing", "") + " --json", capsys)
    plan = json.loads(out)
    # 16 x 1,024 tokens of gpt2-xl hold 49.1 GiB of activations: more than an A100-40GB under any stage.
    assert rc == 0 and plan["model"]["activation_checkpointing"] is False
    assert not any(v["fits"] for v in plan["memory_per_gpu_gib"].values())
    rc, out, _ = run_cli(README_COMMANDS[4], capsys)
    assert rc == 0 and "activation checkpointing on" in out and "WARNING" not in out
    rc, out, _ = run_cli(README_COMMANDS[4] + " --json", capsys)
    plan = json.loads(out)
    # Checkpointing keeps 2·s·b·h per layer: 48 · 2·1024·16·1600 = 2,516,582,400, plus one layer rebuilt
    # (34·s·b·h = 891,289,600) and the head and loss (104,857,600 + 9,880,928,256): 13.39e9 B = 12.47 GiB.
    assert plan["model"]["activation_checkpointing"] is True
    assert plan["activations_gib"]["total"] == pytest.approx(12.474, abs=1e-3)
    assert plan["zero_stage"] == 1 and plan["memory_per_gpu_gib"]["1"]["fits"]


def test_a_batch_that_fits_nowhere_names_the_micro_batch_that_does(capsys):
    rc, out, _ = run_cli("gpt-dist plan --model gpt2-xl --gpus 8 --gpu a100-40gb --micro-batch 32 --json", capsys)
    plan = json.loads(out)
    assert rc == 0 and not any(v["fits"] for v in plan["memory_per_gpu_gib"].values())
    # ZeRO-3: 1,557,686,400 x 16 / 8 = 3,115,372,800 B of states leave 39,834,300,160 B of the 40 GiB;
    # 3,297,980,416 B of activations per sequence -> 12.
    assert plan["zero_stage"] == 3 and plan["largest_micro_batch"] == 12
    assert any("use --micro-batch 12 (the largest that fits with ZeRO stage 3), --activation-checkpointing or more GPUs"
               in w for w in plan["warnings"])


def test_deepseek_batch_is_laid_out_to_divide_over_the_gpus(capsys):
    rc, out, _ = run_cli("gpt-dist plan --model gpt2 --gpus 8 --json", capsys)
    plan = json.loads(out)
    b = plan["batch"]
    # DeepSeek suggests 252,299 tokens = 246.4 sequences; / (8 per GPU x 8 GPUs) = 3.85 -> 4 steps = 256.
    assert (b["grad_accum"], b["global_batch_sequences"]) == (4, 256)
    assert b["global_batch_sequences"] == b["micro_batch"] * b["gpus"] * b["grad_accum"]
    assert b["global_batch_tokens"] == b["global_batch_sequences"] * 1024 and not b["exact"]
    assert plan["train_hours"] * 60 == pytest.approx(11.2, abs=0.1)  # 2.49B tokens at 3.70M tokens/s
    rc, out, _ = run_cli("gpt-dist plan --model gpt2 --gpus 8", capsys)
    assert "tokens in 11.2 minutes" in out


@pytest.mark.parametrize("text, value", [("10B", 1e10), ("300M", 3e8), ("3e10", 3e10), ("524288", 524288.0),
                                         ("0.5M", 5e5), ("2t", 2e12)])
def test_token_counts_take_suffixes(text, value):
    from gpt_dist.planning import parse_count

    assert parse_count(text) == value


def test_model_yaml_with_thin_heads_warns(tmp_path, capsys):
    yaml_file = tmp_path / "model.yaml"
    yaml_file.write_text("model:\n  n_layer: 12\n  n_head: 64\n  n_embd: 1536\n  block_size: 1024\n  vocab_size: 50257\n")
    rc, out, _ = run_cli(f"gpt-dist plan --model {yaml_file} --json", capsys)
    assert rc == 0
    plan = json.loads(out)
    assert plan["params"] == 418_748_928
    assert any("head dimension 24 is below 64" in w for w in plan["warnings"])


@pytest.mark.parametrize(
    "args, message",
    [
        ("--model gpt-5", "'gpt-5' is neither a preset"),
        ("--model missing.yaml", "missing.yaml: model file not found"),
        ("--model gpt2 --gpu a100", "--gpu: unknown GPU 'a100'"),
        ("--model gpt2 --seq-len 4096", "--seq-len: 4096 must be in 1..model.block_size (1024)"),
        ("--model gpt2 --global-batch-tokens 100", "--global-batch-tokens: 100 must be at least one sequence (1024 tokens)"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message, capsys):
    rc, out, err = run_cli(f"gpt-dist plan {args}", capsys)
    assert rc == 2
    assert out == ""
    assert err.startswith("gpt-dist plan: error: ") and message in err


def test_installed_console_script():
    script = Path(sys.executable).with_name("gpt-dist")
    ok = subprocess.run([str(script), *README_COMMANDS[1].split()[1:]], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert JSON_KEYS <= json.loads(ok.stdout).keys()
    bad = subprocess.run([str(script), "plan", "--model", "gpt2", "--gpu", "b200"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "--gpu: unknown GPU 'b200'" in bad.stderr
