"""checkpoint.training_state.check_schedule: what a resume compares against the saved run's
schedule, on configs alone (the in-loop behaviour is tests/engine/test_loop.py's)."""

from __future__ import annotations

import pytest

from gpt_dist.checkpoint.training_state import ResumePlan, check_schedule
from gpt_dist.config import load_config
from gpt_dist.errors import UserError


def _plan(*overrides: str, path: str = "configs/sample_cpu.yaml") -> ResumePlan:
    saved = load_config([path], list(overrides))
    return ResumePlan(tag="step_00000002", metadata={"config": saved.to_dict()}, universal=False)


def test_a_fresh_start_or_the_same_schedule_has_nothing_to_check():
    cfg = load_config(["configs/sample_cpu.yaml"])
    assert check_schedule(None, cfg) == []
    assert check_schedule(_plan(), cfg) == []
    # Not part of the schedule: resuming with another learning rate or log cadence is allowed.
    other_lr = load_config(["configs/sample_cpu.yaml"], ["train.lr=1e-3", "log.every_steps=3"])
    assert check_schedule(_plan(), other_lr) == []


def test_a_token_budget_run_compares_max_tokens():
    saved = _plan("train.max_steps=null", "train.max_tokens=40960")
    now = load_config(["configs/sample_cpu.yaml"], ["train.max_steps=null", "train.max_tokens=81920"])
    with pytest.raises(UserError, match=r"step_00000002: the run was started with train.max_tokens=40960(\.0)? "
                                        r"\(now 81920(\.0)?\)"):
        check_schedule(saved, now)


def test_dpo_batches_compare_in_pairs_and_an_allowed_change_is_returned_for_the_log():
    saved = _plan(path="configs/dpo_sample.yaml")
    now = load_config(["configs/dpo_sample.yaml"], ["train.global_batch_size=16"])
    with pytest.raises(UserError, match=r"a global batch of 8 sequences \(now 16\)"):
        check_schedule(saved, now)
    allowed = load_config(["configs/dpo_sample.yaml"],
                          ["train.global_batch_size=16", "checkpoint.allow_schedule_change=true"])
    assert check_schedule(saved, allowed) == ["a global batch of 8 sequences (now 16)"]
