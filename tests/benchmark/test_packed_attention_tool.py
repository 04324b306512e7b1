"""tools/bench_packed_attention.py measures what it says: both variants train the same packed batch."""

import importlib.util

import pytest


@pytest.fixture(scope="module")
def tool(repo_root):
    spec = importlib.util.spec_from_file_location("bench_packed_attention", repo_root / "tools" / "bench_packed_attention.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_packed_batch_is_rows_of_whole_samples(tool):
    _, seg, pos = tool.packed_batch(2, 64, 97, lengths=(5, 20))
    for r in range(2):
        starts = (pos[r] == 0).nonzero().squeeze(1).tolist()
        assert starts[0] == 0 and len(starts) == int(seg[r].max()) + 1 > 2  # several samples per row
        assert all(seg[r, s] == i for i, s in enumerate(starts))


def test_segments_and_dense_mask_variants_give_the_same_loss(tool):
    a = tool.measure("segments", "tiny", 64, 2, 1, lengths=(5, 20))
    b = tool.measure("dense", "tiny", 64, 2, 1, lengths=(5, 20))
    assert a["segments"] == b["segments"] > 4
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert a["step_s"] > 0 and a["peak_rss_gb"] > 0
