import numpy as np

from gpt_dist.data.sample_order import MIX_BLOCK, MixSchedule, SourceOrder


def test_each_epoch_visits_every_sample_once_in_a_new_order():
    counts = [5, 3, 7, 1, 4]
    order = SourceOrder(counts, seed=7, source_index=0, window=2)
    total = sum(counts)
    shard, local = order.locate(np.arange(3 * total))
    pairs = list(zip(shard.tolist(), local.tolist()))
    everything = {(s, i) for s, n in enumerate(counts) for i in range(n)}
    epochs = [pairs[e * total:(e + 1) * total] for e in range(3)]
    for ep in epochs:
        assert set(ep) == everything and len(ep) == total
    assert epochs[0] != epochs[1] != epochs[2]
    # Located in any chunking, position by position, the answer is the same.
    again = SourceOrder(counts, seed=7, source_index=0, window=2)
    pieces = [again.locate(np.arange(a, b)) for a, b in ((0, 4), (4, 30), (30, 3 * total))]
    assert (np.concatenate([p[0] for p in pieces]) == shard).all()
    assert (np.concatenate([p[1] for p in pieces]) == local).all()


def test_a_shuffle_window_keeps_reads_within_a_few_shards():
    counts = [100] * 8
    order = SourceOrder(counts, seed=0, source_index=0, window=2)
    shard, _ = order.locate(np.arange(200))  # the first window: 2 shards' worth of samples
    assert len(set(shard.tolist())) == 2
    assert len(set(shard[:20].tolist())) == 2  # and they are interleaved, not one after the other


def test_mix_schedule_is_resumable_from_its_state_and_block_independent():
    full = MixSchedule([0.5, 0.3, 0.2], seed=3)
    src_all, k_all = full.take(3 * MIX_BLOCK + 17)
    part = MixSchedule([0.5, 0.3, 0.2], seed=3)
    a = part.take(1000)
    resumed = MixSchedule([0.5, 0.3, 0.2], seed=3, position=part.position, source_positions=part.source_positions)
    b = resumed.take(3 * MIX_BLOCK + 17 - 1000)
    assert (np.concatenate([a[0], b[0]]) == src_all).all()
    assert (np.concatenate([a[1], b[1]]) == k_all).all()
    # Per-source positions count up from 0 without gaps.
    for s in range(3):
        assert (k_all[src_all == s] == np.arange((src_all == s).sum())).all()
    share = np.bincount(src_all) / src_all.size
    assert np.allclose(share, [0.5, 0.3, 0.2], atol=0.02)
