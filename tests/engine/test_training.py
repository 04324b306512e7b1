"""Real training runs on the sample shards that need several processes: 2 gloo ranks, a resume
in a process that did not train, or a process to kill. Runs that need no process of their own
share a launch (train_runs.py): the references, the runs to resume, and the resumes, so each
launch's start-up (Python, torch, DeepSpeed, the process group: seconds per rank) is paid once.
The rest of the loop is tested in process (test_loop.py, test_nonfinite.py, test_train_step.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from gpt_dist.checkpoint.layout import complete_tags, latest_complete_tag

from engine_runs import Run, base_overrides, launch_runs, stopped_at, train_cmd
from testutil import REPO

pytestmark = pytest.mark.slow

# 2 ranks x micro-batch 2 x 256 tokens, 2 accumulation steps: 2048 tokens per optimizer step.
FAST = ["train.micro_batch_size=2", "train.global_batch_tokens=2048", "eval.batches=2", "train.lr=6e-4"]
STEPS = 8
COMPARED = 3  # steps over which ZeRO stages must agree
STOPPED = 3  # the exact resume tests' runs stop after this step
COMMON = FAST + [f"train.max_steps={STEPS}", "checkpoint.every_steps=4", "eval.every_steps=4"]
# the resume checks: ZeRO-3, a checkpoint every step
CHECKS = ["train.micro_batch_size=2", "train.global_batch_tokens=1024", "engine.zero_stage=3",
          "checkpoint.every_steps=1", "checkpoint.keep_last=3", "eval.every_steps=1000"]
RANK1_OPTIM = "zero_pp_rank_1_mp_rank_00_optim_states.pt"


def lora_overrides(init: Path) -> list[str]:
    """LoRA (r 4) from checkpoint `init`, ZeRO-3, 4 steps with a checkpoint every 2."""
    return FAST + ["engine.zero_stage=3", "train.max_steps=4", "checkpoint.every_steps=2", "eval.every_steps=4",
                   f"checkpoint.init_from={init}", "lora.r=4", "lora.dropout=0"]  # masks would differ by rank count


def shm_workspaces(ports: set[str]) -> set[str]:
    """DeepSpeed's CPU all-reduce workspaces in /dev/shm (RAM until someone unlinks them) of the
    runs on these master ports (other tests may be running beside this one)."""
    shm = Path("/dev/shm")
    names = {p.name for p in shm.glob("deepspeed_allreduce_buffer_*")} if shm.is_dir() else set()
    return {n for n in names if n.rsplit("_", 2)[-2] in ports}


class ZeroRuns(dict):
    """Run name -> Run, plus the /dev/shm workspaces the runs left behind."""
    shm_left: set[str]


@pytest.fixture(scope="module")
def zero_runs(tmp_path_factory, sample_shards):
    """One 2-rank launch running, one after the other (train_runs.py): uninterrupted runs for
    ZeRO stages 0-3, 8 steps for 0 and 3 (the references for exact resume), the first 3 steps
    for 1 and 2; runs of stages 0 and 3 stopped after step 3, which the exact resume tests
    resume; "two_tags", step_00000001 and step_00000002 of a ZeRO-3 run for the resume checks;
    and "lora", a ZeRO-3 LoRA run from the ZeRO-0 run's checkpoint. Keys: the stage, "stopped0",
    "stopped3", "two_tags", "lora"."""
    runs = ZeroRuns()

    def zero(stage: int, steps: int) -> list[str]:
        return COMMON + [f"engine.zero_stage={stage}", f"train.exit_after_steps={steps}"]

    # ZeRO-3 last: its engine replaces torch.nn.functional.linear with DeepSpeed's own for the
    # rest of the process (equal to 1e-7, not bit for bit), and the stopped runs must compute as
    # the fresh processes that resume them do.
    plan = {0: zero(0, STEPS), "stopped0": zero(0, STOPPED), 1: zero(1, COMPARED), 2: zero(2, COMPARED),
            3: zero(3, STEPS), "stopped3": zero(3, STOPPED),
            # a 3-step schedule stopped after step 2, so the resume checks' runs keep the schedule
            "two_tags": CHECKS + ["train.max_steps=3", "train.exit_after_steps=2"]}
    root = tmp_path_factory.mktemp("zero_runs")
    plan["lora"] = lora_overrides(root / "0" / "ckpt")  # starts from the ZeRO-0 run, done by then
    runs.update(launch_runs(2, {name: (root / str(name), extra) for name, extra in plan.items()}, sample_shards, root))
    runs.shm_left = shm_workspaces({runs[0].port})
    return runs



@pytest.fixture(scope="module")
def resumed(zero_runs, sample_shards, tmp_path_factory) -> dict[str, Run]:
    """The resumes of those runs, each in a process that did not train them: on 2 ranks (one
    launch) the runs of stages 0 and 3 stopped after step 3, "exact0" and "exact3"; on 1 rank
    (one launch) the ZeRO-3 run from its step 4, "world", and the LoRA run from its step 2,
    "lora" (DeepSpeed's universal format, another world size)."""
    root = tmp_path_factory.mktemp("resumed")
    two = {f"exact{stage}": (shutil.copytree(zero_runs[f"stopped{stage}"].run_dir, root / f"exact{stage}"),
                             COMMON + [f"engine.zero_stage={stage}"]) for stage in (0, 3)}
    # one rank: micro-batch 2 x 256 x 1 rank -> 4 accumulation steps for the same 2048-token batch
    one = {"world": (stopped_at(zero_runs[3], "step_00000004", root / "world"), COMMON + ["engine.zero_stage=3"]),
           "lora": (stopped_at(zero_runs["lora"], "step_00000002", root / "lora"),
                    lora_overrides(zero_runs[0].run_dir / "ckpt"))}
    return {**launch_runs(2, two, sample_shards, root), **launch_runs(1, one, sample_shards, root)}


def test_zero_stages_agree_on_the_first_steps(zero_runs):
    ref = zero_runs[0].losses()
    assert sorted(ref) == list(range(1, STEPS + 1))
    for stage in (1, 2, 3):
        other = zero_runs[stage].losses()
        for step in range(1, COMPARED + 1):
            assert other[step] == pytest.approx(ref[step], abs=1e-5), (stage, step)
    # every stage reports the gradient norm before clipping, fp32 ZeRO-0 included, and they agree
    norms = {stage: {r["step"]: r["grad_norm"] for r in run.metrics()} for stage, run in zero_runs.items()}
    for stage in (1, 2, 3):
        for step in range(1, COMPARED + 1):
            assert norms[stage][step] == pytest.approx(norms[0][step], rel=1e-3), (stage, step)


def test_run_writes_metrics_checkpoints_and_plot(zero_runs):
    run = zero_runs[3]
    m = run.metrics()[-1]
    for key in ("loss", "lr", "grad_norm", "tokens", "tokens_per_s", "step_ms", "data_wait_frac", "mem_gb"):
        assert m[key] is not None and m[key] >= 0, key
    assert m["tokens"] == STEPS * 2048
    assert len(run.metrics("val")) >= 2
    assert (run.run_dir / "loss_curve.png").stat().st_size > 1000
    tags = complete_tags(run.run_dir / "ckpt")
    assert tags == ["step_00000004", "step_00000008"]
    meta = json.loads((run.run_dir / "ckpt" / tags[-1] / "gpt_dist.json").read_text())
    assert meta["world_size"] == 2 and meta["zero_stage"] == 3 and meta["tokens_seen"] == STEPS * 2048
    assert meta["tokenizer"]["fingerprint"] and meta["config"]["model"]["n_layer"] == 4
    assert [e["event"] for e in run.events()][-1] == "finished"


def test_runs_leave_no_shared_memory_behind(zero_runs):
    # Each 2-rank run used to leave 2 x 66 MiB of /dev/shm (RAM) behind for good.
    assert zero_runs.shm_left == set()


@pytest.mark.parametrize("stage", [0, 3])
def test_exact_resume_is_bitwise(stage, zero_runs, resumed):
    """Stop after 3 steps, resume (another launch): every later loss equals the uninterrupted
    run's, bit for bit."""
    assert latest_complete_tag(zero_runs[f"stopped{stage}"].run_dir / "ckpt") == f"step_{STOPPED:08d}"
    second = resumed[f"exact{stage}"]
    assert second.returncode == 0, second.output[-3000:]
    assert any(e["event"] == "resumed" for e in second.events())
    ref, got = zero_runs[stage].losses(), second.losses()
    for step in range(1, STEPS + 1):
        assert got[step] == ref[step], (step, got[step], ref[step])  # bitwise, fp32



def test_resume_on_a_different_world_size_keeps_the_data_position(zero_runs, resumed):
    second = resumed["world"]  # the uninterrupted ZeRO-3 run's step 4, resumed on one rank
    assert second.returncode == 0, second.output[-3000:]
    resumed = [e for e in second.events() if e["event"] == "resumed"]
    assert resumed and resumed[0]["universal"] is True and resumed[0]["world_size"] == 1
    got, ref = second.metrics(), zero_runs[3].metrics()
    assert [r["tokens"] for r in got if r["step"] > 4] == [r["tokens"] for r in ref if r["step"] > 4]
    # same samples, weights and optimizer state; only the order of the gradient sums differs
    for step in range(5, STEPS + 1):
        assert second.losses()[step] == pytest.approx(zero_runs[3].losses()[step], abs=1e-5), step


def test_lora_run_trains_adapters_only_and_resumes_on_another_world_size(zero_runs, resumed):
    """LoRA (peft) from a checkpoint, ZeRO-3 on 2 ranks: only the adapters change, and a run
    stopped there and resumed on 1 rank (DeepSpeed's universal format, which leaves the frozen
    weights out) continues as the uninterrupted run to 1e-5."""
    from gpt_dist.checkpoint.deepspeed_reader import read_raw_weights
    from gpt_dist.checkpoint.model_loader import load_weights

    init, ref = zero_runs[0].run_dir / "ckpt", zero_runs["lora"]  # the 2-rank run, from the ZeRO-0 run's checkpoint
    start = next(e for e in ref.events() if e["event"] == "start")
    assert 0 < start["lora_trainable_params"] < 100_000
    # the frozen weights are the starting ones, bit for bit; the adapted layers moved
    _, base, _ = load_weights(init)
    final = ref.run_dir / "ckpt" / latest_complete_tag(ref.run_dir / "ckpt")
    saved = read_raw_weights(final, json.loads((final / "gpt_dist.json").read_text()))
    for name, tensor in base.items():
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight", "c_attn.bias", "c_proj.bias", "c_fc.bias")):
            name = name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(saved[name].load()[: tensor.shape[0]], tensor), name
    _, merged, _ = load_weights(final)
    assert not torch.equal(merged["transformer.h.0.attn.c_attn.weight"], base["transformer.h.0.attn.c_attn.weight"])

    one = resumed["lora"]  # the run stopped at step 2 (its checkpoint there) resumed on one rank
    assert one.returncode == 0, one.output[-3000:]
    assert next(e for e in one.events() if e["event"] == "resumed")["universal"] is True
    for step in (3, 4):
        assert one.losses()[step] == pytest.approx(ref.losses()[step], abs=1e-5), step


# Two ranks resuming from a damaged checkpoint: each validates the tag before loading, so the
# verdict is the same everywhere: the same fall-back, or the same one error on every rank, not a
# traceback on one rank and "Connection closed by peer" on the other.


@pytest.mark.timeout(400)
def test_a_missing_shard_of_one_rank_falls_back_on_every_rank(zero_runs, run_train, tmp_path):
    run_dir = shutil.copytree(zero_runs["two_tags"].run_dir, tmp_path / "run")
    (run_dir / "ckpt" / "step_00000002" / RANK1_OPTIM).unlink()
    again = run_train(run_dir, world=2, overrides=CHECKS + ["train.max_steps=3"])
    assert again.returncode == 0, again.output[-3000:]
    assert [e["tag"] for e in again.events() if e["event"] == "resumed"] == ["step_00000001"]
    assert f"{RANK1_OPTIM}: missing" in again.output and "resuming from step_00000001" in again.output


@pytest.mark.timeout(400)
def test_a_damaged_only_tag_is_the_same_clear_error_on_every_rank(zero_runs, run_train, tmp_path):
    run_dir = shutil.copytree(zero_runs["two_tags"].run_dir, tmp_path / "run")
    shutil.rmtree(run_dir / "ckpt" / "step_00000001")
    shard = run_dir / "ckpt" / "step_00000002" / RANK1_OPTIM
    shard.write_bytes(shard.read_bytes()[:1000])
    again = run_train(run_dir, world=2, overrides=CHECKS + ["train.max_steps=3"])
    assert again.returncode != 0
    said = "gpt-dist train: error: " + str(run_dir / "ckpt") + ": no complete checkpoint validates"
    assert again.output.count(said) == 2, again.output[-3000:]
    for noise in ("Connection closed by peer", "Traceback", "PytorchStreamReader", "AssertionError"):
        assert noise not in again.output, again.output[-3000:]


def test_sigkill_during_training_leaves_a_usable_checkpoint(run_train, sample_shards, tmp_path):
    """Kill -9 while checkpoints are being written every step; a partial tag is passed over."""
    over = ["train.micro_batch_size=2", "train.global_batch_tokens=512", "train.max_steps=100000", "checkpoint.every_steps=1",
            "checkpoint.keep_last=2"]
    proc = subprocess.Popen(train_cmd(1, base_overrides(sample_shards, tmp_path) + over), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(complete_tags(tmp_path / "ckpt")) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    ckpt = tmp_path / "ckpt"
    good = latest_complete_tag(ckpt)
    assert good is not None
    # Whatever the kill interrupted, also leave a newer save that died half-way for certain.
    step = int(good.split("_")[1])
    partial = ckpt / f"step_{step + 1:08d}"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(ckpt / good, partial)
    (partial / "COMPLETE").unlink()
    model_file = next(partial.glob("mp_rank_*_model_states.pt"))
    model_file.write_bytes(model_file.read_bytes()[:100])  # truncated
    again = run_train(tmp_path, world=1, overrides=over[:-2] + ["checkpoint.every_steps=1000", "train.exit_after_steps=2"])
    assert again.returncode == 0, again.output[-3000:]
    resumed = [e for e in again.events() if e["event"] == "resumed"]
    assert resumed[-1]["tag"] == good


def test_bad_batch_geometry_for_the_world_size_is_a_clear_error(run_train, tmp_path):
    # 1536 tokens = 3 x (2 x 256): fine for one rank, not divisible across 2 ranks
    r = run_train(tmp_path, world=2, overrides=["train.micro_batch_size=2", "train.global_batch_tokens=1536", "train.max_steps=2"])
    assert r.returncode != 0
    assert "train.global_batch_tokens: 1536 is not a multiple" in r.output and "data-parallel ranks (2)" in r.output
    assert "use 1024" in r.output and "2048" in r.output
