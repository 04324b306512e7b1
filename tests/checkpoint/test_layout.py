import pytest

from gpt_dist.checkpoint.layout import (
    complete_tags,
    latest_complete_tag,
    mark_complete,
    resolve_tag,
    tag_for_step,
    write_json_atomic,
)
from gpt_dist.checkpoint.training_state import prune
from gpt_dist.errors import CheckpointError


def make_tag(d, step, complete=True):
    t = d / tag_for_step(step)
    t.mkdir(parents=True)
    (t / "mp_rank_00_model_states.pt").write_bytes(b"x")
    if complete:
        write_json_atomic(t / "gpt_dist.json", {"step": step})
        mark_complete(t)
    return t


def test_only_complete_tags_count(tmp_path):
    make_tag(tmp_path, 100)
    make_tag(tmp_path, 200)
    make_tag(tmp_path, 300, complete=False)  # a save killed half-way
    assert complete_tags(tmp_path) == ["step_00000100", "step_00000200"]
    assert latest_complete_tag(tmp_path) == "step_00000200"
    assert resolve_tag(tmp_path) == (tmp_path, "step_00000200")


def test_resolve_tag_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        resolve_tag(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="not a gpt_dist checkpoint directory"):
        resolve_tag(tmp_path)
    make_tag(tmp_path, 5, complete=False)
    with pytest.raises(CheckpointError, match="no complete checkpoint.*step_00000005"):
        resolve_tag(tmp_path)
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        resolve_tag(tmp_path, "step_00000005")


def test_a_tag_folder_resolves_to_itself(tmp_path):
    t = make_tag(tmp_path, 7)
    assert resolve_tag(t) == (tmp_path, "step_00000007")


def test_prune_keeps_last_k_and_drops_stale_partial_saves(tmp_path):
    for s in (1, 2, 3, 4):
        make_tag(tmp_path, s)
    make_tag(tmp_path, 3 * 1000, complete=False)  # newer partial: maybe being written, kept
    make_tag(tmp_path, 0, complete=False)  # older partial: garbage
    prune(tmp_path, keep_last=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step_00000003", "step_00000004", "step_00003000"]
