"""One optimizer step is exact whatever the split: the same global batch as micro-batch 4 x 1
accumulation step, 1 x 4, and 2 ranks x 1 x 2 gives the same loss, grad_norm and updated
gradient for pre-training, SFT and DPO, also when the micro-batches hold very different numbers
of trained tokens (SFT rows / DPO replies of 15, 1, 8 and 2 tokens)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt_dist.engine.distributed import init_distributed

from step_cases import TRAINED, run_one_step
from testutil import REPO, free_port

HERE = Path(__file__).parent
OBJECTIVES = ["lm", "sft", "dpo", "dpo_nll"]


@pytest.fixture(scope="module")
def dist():
    return init_distributed()  # a world of one process (gloo)


def close(a: float, b: float, rel: float = 1e-5) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def assert_same_gradient(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal to 1e-5 relative, elements near zero measured against the largest one."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(a.abs().max()))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_micro_batch_split_changes_nothing(objective, dist):
    one, norm_one, g_one, _ = run_one_step(objective, micro=4, dist=dist)
    four, norm_four, g_four, _ = run_one_step(objective, micro=1, dist=dist)
    assert one.units == four.units and not one.skipped
    if objective == "sft":
        assert one.units == sum(TRAINED) and one.trained_tokens == sum(TRAINED)
    if objective.startswith("dpo"):
        assert one.units == 4 and one.tokens > one.trained_tokens
    assert close(one.loss, four.loss), (one.loss, four.loss)
    assert close(float(norm_one), float(norm_four)), (norm_one, norm_four)
    for k in one.metrics:
        assert one.metrics[k] == pytest.approx(four.metrics[k], rel=1e-5, abs=1e-7), k
    assert_same_gradient(g_one, g_four)


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_the_split_changes_nothing_under_zero_sharding(zero_stage, dist):
    one, norm_one, g_one, _ = run_one_step("sft", micro=4, dist=dist, zero_stage=zero_stage)
    four, norm_four, g_four, _ = run_one_step("sft", micro=1, dist=dist, zero_stage=zero_stage)
    assert close(one.loss, four.loss) and close(float(norm_one), float(norm_four)), (one.loss, four.loss)
    assert_same_gradient(g_one, g_four)


def test_a_mean_of_micro_batch_means_would_differ(dist):
    """The check above can fail: SFT's per-token mean over the step is not the mean of the
    four micro-batches' means when their trained tokens differ this much."""
    from step_cases import collate, config, objective_of, units
    from gpt_dist.model.gpt import GPT

    cfg, _ = config("sft", 1, 1)
    torch.manual_seed(0)
    model = GPT(cfg.model)
    parts = units("sft")
    with torch.no_grad():
        sums = [objective_of("sft").loss(model, collate("sft", [p])).loss.item() for p in parts]
    exact, mean_of_means = sum(sums) / sum(TRAINED), sum(s / n for s, n in zip(sums, TRAINED)) / 4
    assert not close(exact, mean_of_means, rel=1e-4)  # ten times the tolerance of the test above


# Every multi-rank case of this module, run by one launch of split_step_run.py (each launch
# starts three Python processes and two DeepSpeed worlds; the cases need nothing of each other).
TWO_RANK_JOBS = [f"{objective}:1" for objective in OBJECTIVES] + ["dpo_reference:1:3"]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    """split_step_run.py on 2 gloo ranks (torchrun): what rank 0 saved, by job."""
    out_file = tmp_path_factory.mktemp("two_ranks") / "rank0.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(HERE / "split_step_run.py"), str(out_file), *TWO_RANK_JOBS]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), str(REPO / "tests"), env.get("PYTHONPATH", "")]))
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return torch.load(out_file, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_ranks_give_the_one_rank_step(objective, dist, two_ranks):
    ref, ref_norm, ref_g, _ = run_one_step(objective, micro=4, dist=dist)
    got = two_ranks[f"{objective}:1"]
    assert got["units"] == ref.units
    assert close(got["loss"], ref.loss), (got["loss"], ref.loss)
    assert close(got["grad_norm"], float(ref_norm)), (got["grad_norm"], ref_norm)
    assert_same_gradient(got["grad"], ref_g)


@pytest.mark.parametrize("zero_stage", [0, 1, 2, 3])
def test_a_step_with_a_nan_micro_batch_is_skipped_whole(dist, zero_stage):
    """The NaN is in the last micro-batch, after three good backward passes: no update at all
    (weights and Adam's step count stay), and the gradients are cleared for the next step."""
    from gpt_dist.model.gpt import GPT

    from step_cases import config

    out, _, grad, engine = run_one_step("lm", micro=1, dist=dist, poison=3, zero_stage=zero_stage)
    assert out.skipped and grad is None  # the optimizer never ran
    cfg, _ = config("lm", 1, 1)
    torch.manual_seed(0)
    initial = GPT(cfg.model).state_dict()
    weights = engine._zero3_consolidated_16bit_state_dict() if zero_stage == 3 else engine.module.state_dict()
    for name, value in weights.items():
        assert torch.equal(value, initial[name]), name
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
    assert all(len(s) == 0 for s in inner.state.values())
    assert all(p.grad is None or not p.grad.any() for p in engine.module.parameters())


def _docs_examples() -> dict[str, object]:
    """The objective and callback written out in docs/training.md, executed as they stand."""
    import re

    text = (REPO / "docs" / "training.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    captured: dict[str, object] = {}

    def fake_train(cfg, objective=None, callbacks=()):
        if objective is not None:
            captured["objective"] = objective
        if callbacks:
            captured["callbacks"] = list(callbacks)

    for block in blocks:
        exec(block, {"torch": torch, "train": fake_train, "cfg": None})
    return captured


def test_the_documented_objective_is_exact_too(dist, monkeypatch):
    import step_cases

    example = _docs_examples()["objective"]
    assert type(example).__name__ == "LabelSmoothedLM"
    monkeypatch.setattr(step_cases, "objective_of", lambda name: example)
    one, norm_one, g_one, _ = run_one_step("lm", micro=4, dist=dist)
    four, norm_four, g_four, _ = run_one_step("lm", micro=1, dist=dist)
    assert close(one.loss, four.loss) and close(float(norm_one), float(norm_four))
    assert_same_gradient(g_one, g_four)
    assert 0 < one.loss < 10  # label smoothing over a 96-token vocabulary at initialisation: about log 96


def test_the_documented_callback_keeps_its_best_loss():
    cb = _docs_examples()["callbacks"][0]

    class _Dist:
        is_main = False

    class _Trainer:
        dist = _Dist()

    cb.on_eval(_Trainer(), {"split": "val", "loss": 3.0, "step": 5})
    cb.on_eval(_Trainer(), {"split": "val", "loss": 4.0, "step": 6})
    restored = type(cb)()
    restored.load_state_dict(cb.state_dict())
    assert restored.best == 3.0


@pytest.mark.slow
def test_dpo_reference_scored_by_a_zero3_engine_over_two_ranks(dist, two_ranks):
    """5 pairs over 2 ranks (3 and 2: the short rank repeats a pair so that both run the same
    forward passes, which ZeRO-3 needs) give the table one process scores."""
    from step_cases import reference_table

    got = two_ranks["dpo_reference:1:3"]["table"]
    ref = reference_table(dist, zero_stage=0)
    assert got.shape == (5, 2) and (got < 0).all()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
