"""COMPLETE's file list: a file of the tag that is missing, truncated or from another save is
named; gpt_dist.json may be edited; tags from before manifests are not checked."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from gpt_dist.checkpoint.layout import COMPLETE_MARKER, METADATA_FILE, is_complete, mark_complete
from gpt_dist.checkpoint.manifest import verify_tag, write_manifest
from gpt_dist.errors import CheckpointError


def _save(tag, seed):
    tag.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    for r in range(2):
        torch.save({"w": torch.randn(64, 64, generator=g)}, tag / f"zero_pp_rank_{r}_optim_states.pt")
    (tag / METADATA_FILE).write_text(json.dumps({"step": seed}))
    write_manifest(tag)
    return tag


def test_an_intact_tag_verifies_and_counts_as_complete(tmp_path):
    tag = _save(tmp_path / "step_00000001", 1)
    assert verify_tag(tag) and is_complete(tag)
    listed = json.loads((tag / COMPLETE_MARKER).read_text())["files"]
    assert sorted(listed) == ["zero_pp_rank_0_optim_states.pt", "zero_pp_rank_1_optim_states.pt"]


def test_a_shard_of_another_save_is_named(tmp_path):
    a, b = _save(tmp_path / "a" / "step_00000001", 1), _save(tmp_path / "b" / "step_00000001", 2)
    shutil.copy2(b / "zero_pp_rank_1_optim_states.pt", a / "zero_pp_rank_1_optim_states.pt")  # same size
    with pytest.raises(CheckpointError, match=r"zero_pp_rank_1_optim_states\.pt: its content is not the one saved"):
        verify_tag(a)


@pytest.mark.parametrize("damage, said", [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "bytes, but"),
    (lambda p: p.unlink(), "missing"),
])
def test_a_truncated_or_deleted_file_is_named(tmp_path, damage, said):
    tag = _save(tmp_path / "step_00000001", 1)
    damage(tag / "zero_pp_rank_0_optim_states.pt")
    with pytest.raises(CheckpointError, match=rf"zero_pp_rank_0_optim_states\.pt: .*{said}"):
        verify_tag(tag)


def test_metadata_may_be_edited_and_old_tags_are_not_checked(tmp_path):
    tag = _save(tmp_path / "step_00000001", 1)
    (tag / METADATA_FILE).write_text(json.dumps({"step": 1, "note": "edited"}))
    assert verify_tag(tag)
    mark_complete(tag)  # the marker as tags had it before manifests
    assert verify_tag(tag) is False
