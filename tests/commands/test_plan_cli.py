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
]

JSON_KEYS = {
    "params", "non_embedding_params", "flops_per_token", "memory_per_gpu_gb", "train_days",
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
    assert set(plan["memory_per_gpu_gb"]) == {"0", "1", "2", "3"}
    for stage in plan["memory_per_gpu_gb"].values():
        assert {"model_states_gb", "activations_gb", "total_gb", "fits"} <= stage.keys()
    assert {"lr", "batch_tokens", "batch_sequences"} <= plan["deepseek"].keys()
    assert plan["gpus"] == 8 and plan["gpu"] == "h100-80gb" and plan["mfu"] == 0.4
    assert plan["tokens"] == plan["chinchilla_tokens"] == 20 * 124_439_808


def test_readme_plan_that_does_not_fit(capsys):
    rc, out, _ = run_cli(README_COMMANDS[2], capsys)
    assert rc == 0
    # 774,090,240 stored params · 16 B = 12.385 GB; activations 36·34·1024·16·1280 + 4·1024·16·1280
    # + 12·1024·16·50,257 = 25,669,140,480 + 83,886,080 + 9,880,928,256 bytes = 35.63 GB.
    assert "WARNING: ZeRO stage 0 needs 48.0 GB per GPU, more than the 40 GB of one a100-40gb" in out


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
