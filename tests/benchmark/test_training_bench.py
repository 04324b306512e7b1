"""`gpt-dist bench` as the README runs it: every reported key on a CPU, the Hugging Face
comparison on identical batches, the DeepSpeed path, the loader alone, and bad flags."""

import json
import shlex
import subprocess
import sys

import pytest
import torch

from gpt_dist.benchmark.hf_reference import HFCausalLM, build_hf_twin
from gpt_dist.benchmark.training import BenchSettings, run_training_benchmark
from gpt_dist.cli import main
from gpt_dist.config import ModelConfig, resolve_model_config
from gpt_dist.model.gpt import GPT

# Exactly as docs/eval_bench.md shows them.
BENCH_COMPARE = "gpt-dist bench --model mini --seq-len 128 --micro-batch 4 --steps 5 --compare-hf --json"
BENCH_ZERO = "gpt-dist bench --model mini --seq-len 128 --micro-batch 4 --steps 3 --zero-stage 2 --json"
BENCH_DATA = "gpt-dist bench --data data/sample --json"

POSITIVE = ["step_ms", "step_ms_min", "step_ms_max", "tokens_per_s", "tokens_per_s_per_rank", "tokens_per_step",
            "flops_per_token", "achieved_tflops", "peak_memory_gb", "first_loss", "last_loss", "step_cpu_ms"]


def run_json(command: str, capsys) -> dict:
    argv = shlex.split(command)
    assert argv[0] == "gpt-dist"
    assert main(argv[1:]) == 0
    return json.loads(capsys.readouterr().out)


def test_readme_compare_hf_reports_every_key_and_trains_both_on_the_same_batches(capsys):
    r = run_json(BENCH_COMPARE, capsys)
    for key in POSITIVE + ["hf_tokens_per_s", "hf_step_ms", "hf_step_cpu_ms", "speedup_vs_hf", "speedup_vs_hf_cpu_time"]:
        assert r[key] > 0, key
    assert r["tokens_per_step"] == 4 * 128
    assert r["tokens_per_s"] == pytest.approx(r["tokens_per_step"] / (r["step_ms"] / 1000))
    assert r["step_ms_min"] <= r["step_ms"] <= r["step_ms_max"]
    assert len(r["step_ms_each"]) == len(r["hf_step_ms_each"]) == 5
    assert r["mfu"] is None and r["peak_flops"] is None  # a CPU's peak FLOP/s is not known
    assert r["peak_memory_kind"] == "process_max_rss"
    assert (r["zero_stage"], r["precision"], r["steps"], r["warmup"]) == (None, "fp32", 5, 3)
    # Same weights, same first batch: the same loss, to float rounding...
    assert r["hf_first_loss"] == pytest.approx(r["first_loss"], abs=1e-5)
    # ...and after seven AdamW updates on the same batches, still the same loss (had the HF model
    # not been updated, or seen other batches, they would differ by ~1e-2 by then).
    assert r["hf_last_loss"] == pytest.approx(r["last_loss"], abs=1e-4)


def test_hf_twin_computes_our_function():
    torch.manual_seed(0)
    ours = GPT(resolve_model_config(ModelConfig(preset="tiny")))
    theirs = HFCausalLM(build_hf_twin(ours))
    tok = torch.randint(0, 50257, (2, 33))
    with torch.no_grad():
        torch.testing.assert_close(theirs.hf(tok[:, :-1]).logits, ours(tok[:, :-1]), rtol=0, atol=1e-5)
        torch.testing.assert_close(theirs(tok[:, :-1], tok[:, 1:]), ours(tok[:, :-1], tok[:, 1:]), rtol=0, atol=1e-5)


def test_bf16_autocast_trains():
    r = run_training_benchmark(BenchSettings(model=resolve_model_config(ModelConfig(preset="tiny")), seq_len=16,
                                             micro_batch=2, steps=2, warmup=1, precision="bf16"))
    assert r["precision"] == "bf16" and r["tokens_per_s"] > 0
    assert r["last_loss"] != r["first_loss"]


@pytest.mark.slow
def test_readme_zero_stage_times_the_deepspeed_engine(capsys):
    """In process: DeepSpeed sets up torch.distributed as a world of one, as under the other
    in-process tests, and the JSON is all that goes to stdout."""
    r = run_json(BENCH_ZERO, capsys)  # DeepSpeed's own prints go to stderr
    assert r["zero_stage"] == 2 and r["world_size"] == 1
    for key in POSITIVE:
        assert r[key] > 0, key
    # The group it started is torn down with DeepSpeed's cached copies of it: the next engine
    # built in this process (another bench, a training run) does not find a dead group.
    import torch

    assert not torch.distributed.is_initialized()
    assert run_json(BENCH_ZERO, capsys)["world_size"] == 1


def test_readme_loader_alone(bench_workspace, monkeypatch, capsys):
    monkeypatch.chdir(bench_workspace)
    r = run_json(BENCH_DATA, capsys)["loader"]
    assert r["data"] == "data/sample/train" and r["seq_len"] == 64 and r["micro_batch"] == 8
    assert r["batches"] == 200 and r["tokens"] == 200 * 8 * 64  # epochs roll over: 100 sequences, 1600 read
    assert r["tokens_per_s_per_rank"] > 0 and r["rank"] == 0 and r["world_size"] == 1


def test_text_output(capsys):
    assert main(["bench", "--model", "tiny", "--seq-len", "16", "--micro-batch", "2", "--steps", "2", "--warmup", "0",
                 "--compare-hf"]) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out and "MFU n/a" in out and "speedup" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "tiny", "--seq-len", "65"], "--seq-len: 65 must be in 1..model.block_size (64)"),
        (["--model", "tiny", "--steps", "0"], "--steps: 0 must be at least 1"),
        (["--model", "tinyy"], "did you mean 'tiny'"),
        (["--model", "tiny", "--compile", "--warmup", "0"], "--compile: give --warmup 1 or more"),
        (["--model", "tiny", "--loss-chunk-tokens", "-1"], "--loss-chunk-tokens: -1 must be 0"),
        (["--data", "no/such/dir"], "--data no/such/dir: no manifest.json"),
        ([], "give --model"),
    ],
)
def test_bad_flags_exit_2_with_the_fix(flags, message, capsys):
    assert main(["bench", *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_model_trains_like_eager_under_every_zero_stage():
    """torch.compile (inductor on the CPU) beside eager on the same batches, bare and ZeRO 0-3:
    the same losses before and after three optimizer updates. One process for all of them (the
    process group is started once, the compiled block graph reused), with dynamo's caches emptied
    before and after, so no earlier compile in this interpreter counts towards its recompile limit
    (past it, dynamo would run eagerly and the comparison would hold trivially). A 512-token
    vocabulary: the embedding and LM head are not what compile changes."""
    from gpt_dist.engine.distributed import leave_distributed

    stages = [None, 0, 1, 2, 3]
    runs = []
    torch._dynamo.reset()
    try:
        for stage in stages:
            model = resolve_model_config(ModelConfig(preset="tiny", vocab_size=512, loss_chunk_tokens=8))
            runs.append(run_training_benchmark(BenchSettings(model=model, seq_len=16, micro_batch=2, steps=2, warmup=1,
                                                             zero_stage=stage, compile="both")))
    finally:
        leave_distributed()
        torch._dynamo.reset()
    assert [r["zero_stage"] for r in runs] == stages
    for r in runs:
        assert r["compiled_first_loss"] == pytest.approx(r["first_loss"], abs=1e-5), r["zero_stage"]
        assert r["compiled_last_loss"] == pytest.approx(r["last_loss"], abs=1e-5), r["zero_stage"]
        assert r["compiled_tokens_per_s"] > 0 and r["compile_speedup"] > 0


GPU_TABLE_DRY = "GPU_RUNS=dry tools/bench_train_step.sh gpu_table_dry"


@pytest.mark.slow
def test_gpu_table_command_dry_run_writes_every_row(repo_root, tmp_path):
    """`GPU_RUNS=dry tools/bench_train_step.sh OUT`: the GPU table's whole code path on tiny
    shapes (largest micro-batch search, chunked/plain loss, compiled, HF, ZeRO-1/3), run as
    docs/eval_bench.md writes it, from a folder that holds the repository's tools/."""
    import os

    (tmp_path / "tools").symlink_to(repo_root / "tools")
    env = dict(os.environ, PYTHON=sys.executable)
    p = subprocess.run(["bash", "-c", GPU_TABLE_DRY], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=800, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    tmp_path = tmp_path / "gpu_table_dry"
    table = json.loads((tmp_path / "gpu_table.json").read_text())
    assert table["dry_run"] and table["precision"] == "bf16"
    assert table["attention_check"]["checked"] is torch.cuda.is_available()
    rows = {r["variant"]: r for r in table["rows"]}
    assert list(rows) == ["chunked loss", "chunked loss, compiled", "plain loss + HF", "ZeRO-1", "ZeRO-3"]
    for variant, r in rows.items():
        assert r["model"] == "tiny" and r["tokens_per_s"] > 0 and r["peak_memory_gb"] > 0, variant
        assert r["micro_batch"] == 2  # the dry run's cap: nothing runs out of memory here
    assert rows["chunked loss"]["loss_chunk_tokens"] > 0 and rows["plain loss + HF"]["loss_chunk_tokens"] == 0
    assert rows["chunked loss, compiled"]["compile"] == "on" and rows["plain loss + HF"]["speedup_vs_hf"] > 0
    assert rows["ZeRO-3"]["zero_stage"] == 3 and "overhead_vs_bare" in rows["ZeRO-3"]
    md = (tmp_path / "gpu_table.md").read_text()
    assert "| tiny | chunked loss | 2 (2) |" in md and "DRY RUN" in md
    assert "gpu table: python -m gpt_dist.benchmark.gpu_suite" in (tmp_path / "commands.txt").read_text()


BENCH_COMPILE = "gpt-dist bench --model tiny --seq-len 16 --micro-batch 2 --steps 2 --warmup 1 --compile --json"


def test_docs_compile_times_eager_and_compiled_on_the_same_batches(capsys):
    r = run_json(BENCH_COMPILE, capsys)
    assert r["compile"] == "both" and r["compiled_tokens_per_s"] > 0 and r["compile_speedup"] > 0
    assert len(r["compiled_step_ms_each"]) == len(r["step_ms_each"]) == 2
    assert r["compiled_first_loss"] == pytest.approx(r["first_loss"], abs=1e-5)
    assert r["compiled_last_loss"] == pytest.approx(r["last_loss"], abs=1e-5)
    assert r["attn_kernel"] == "sdpa" and r["loss_chunk_tokens"] == 1024


def test_plain_loss_flag_trains_the_same_function(capsys):
    """--loss-chunk-tokens 0 (the plain loss) and the default chunks: the same losses."""
    flags = ["--model", "tiny", "--seq-len", "16", "--micro-batch", "4", "--steps", "2", "--warmup", "1", "--json"]
    plain = run_json(" ".join(["gpt-dist", "bench", *flags, "--loss-chunk-tokens", "0"]), capsys)
    chunked = run_json(" ".join(["gpt-dist", "bench", *flags, "--loss-chunk-tokens", "24"]), capsys)
    assert (plain["loss_chunk_tokens"], chunked["loss_chunk_tokens"]) == (0, 24)
    assert chunked["first_loss"] == pytest.approx(plain["first_loss"], abs=1e-6)
    assert chunked["last_loss"] == pytest.approx(plain["last_loss"], abs=1e-5)
