"""The SFT / DPO loaders: exact resume, the same global order on any number of ranks, fresh
shuffles per epoch, equal evaluation batches on every rank."""

from __future__ import annotations

import pytest

from gpt_dist.errors import DataError
from gpt_dist.finetune.epoch_loader import EpochLoader, EvalBatches


def units(idx):
    return {"units": list(idx)}


def loader(n=10, mbs=2, rank=0, world=1, seed=7):
    return EpochLoader(n, units, mbs, rank, world, seed, "data.train (test)")


def steps(loaders, n_steps, grad_accum):
    """The units each optimizer step consumes, all ranks together."""
    out = []
    for _ in range(n_steps):
        step = []
        for _ in range(grad_accum):
            for ld in loaders:
                step += next(ld)["units"]
        out.append(sorted(step))
    return out


def test_resume_continues_with_the_same_batches():
    a = loader()
    for _ in range(7):
        next(a)
    b = loader()
    b.load_state_dict(a.state_dict())
    assert [next(a)["units"] for _ in range(12)] == [next(b)["units"] for _ in range(12)]


def test_global_order_does_not_depend_on_world_size():
    """8 units per optimizer step: 1 rank x micro-batch 4 x 2 accumulation == 2 ranks x 2 x 2."""
    one = steps([loader(mbs=4)], 6, grad_accum=2)
    two_ranks = [loader(mbs=2, rank=r, world=2) for r in (0, 1)]
    two = steps(two_ranks, 3, grad_accum=2)
    assert two == one[:3]
    # resume the 2-rank run on 1 rank: it continues the same order
    resumed = loader(mbs=4)
    resumed.load_state_dict(two_ranks[0].state_dict())
    assert steps([resumed], 3, grad_accum=2) == one[3:]


def test_each_epoch_visits_every_unit_once_in_a_new_order():
    ld = loader(n=10, mbs=5)
    e1 = next(ld)["units"] + next(ld)["units"]
    e2 = next(ld)["units"] + next(ld)["units"]
    assert sorted(e1) == sorted(e2) == list(range(10)) and e1 != e2
    assert ld.epoch == 2.0


def test_resume_onto_different_data_is_refused():
    a = loader(n=10)
    next(a)
    with pytest.raises(DataError, match="changed since"):
        loader(n=11).load_state_dict(a.state_dict())


def test_eval_batches_are_equal_on_every_rank():
    per_rank = [list(EvalBatches(11, units, 2, r, 3, max_batches=10, what="data.val")) for r in range(3)]
    assert [len(b) for b in per_rank] == [2, 2, 2]  # 11 // 3 = 3 units each: batches of 2 and 1
    seen = sorted(u for batches in per_rank for b in batches for u in b["units"])
    assert seen == list(range(9))
    assert len(EvalBatches(11, units, 2, 0, 1, max_batches=3, what="data.val")) == 3
    with pytest.raises(DataError, match="fewer than the 4 ranks"):
        EvalBatches(3, units, 2, 0, 4, max_batches=3, what="data.val")
