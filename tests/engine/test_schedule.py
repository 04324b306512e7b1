import pytest

from gpt_dist.config import TrainConfig
from gpt_dist.engine.schedule import lr_at


def cfg(**kw):
    return TrainConfig(lr=1.0, min_lr=0.1, warmup_fraction=0.1, **kw)


def test_warmup_is_linear_up_to_peak():
    t = cfg(schedule="cosine")
    assert [lr_at(s, 100, t) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])


@pytest.mark.parametrize("schedule", ["cosine", "linear", "wsd"])
def test_decays_to_min_lr_and_never_below(schedule):
    t = cfg(schedule=schedule)
    lrs = [lr_at(s, 100, t) for s in range(100)]
    assert lrs[10] == pytest.approx(1.0)
    assert min(lrs) >= 0.1 - 1e-12
    assert lr_at(100, 100, t) == pytest.approx(0.1)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[10:], lrs[11:]))  # monotone after warmup


def test_cosine_midpoint():
    t = cfg(schedule="cosine")
    assert lr_at(55, 100, t) == pytest.approx(0.55)  # halfway through the decay: (lr + min_lr) / 2


def test_wsd_is_flat_then_decays_over_decay_fraction():
    t = cfg(schedule="wsd", decay_fraction=0.2)
    assert lr_at(79, 100, t) == pytest.approx(1.0)
    assert lr_at(90, 100, t) == pytest.approx(0.55)


def test_constant_after_warmup():
    t = cfg(schedule="constant")
    assert lr_at(99, 100, t) == 1.0
