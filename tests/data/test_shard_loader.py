import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt_dist.config import TokenizerConfig
from gpt_dist.data.shard_loader import build_train_loader, build_val_loader, check_tokenizer_matches
from gpt_dist.data.shards import read_manifest
from gpt_dist.data.tokenizer import load_tokenizer
from gpt_dist.errors import DataError

from data_helpers import FAKE_TOKENIZER, loader_config, make_shard_set, numbered_samples, sample_ids

SEQ = 16


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("mix")
    a = make_shard_set(d / "a", numbered_samples(60, SEQ, source=0), per_shard=7)
    b = make_shard_set(d / "b", numbered_samples(25, SEQ, source=1), per_shard=6)
    return a, b


def global_order(batches_per_rank: list[list[torch.Tensor]]) -> list[tuple[int, int]]:
    """Interleave per-rank batches round by round: the global sample sequence."""
    out = []
    for round_batches in zip(*batches_per_rank):
        for b in round_batches:
            out += sample_ids(b)
    return out


def take(loader, n: int) -> list[torch.Tensor]:
    return [b["input_ids"] for b in islice(iter(loader), n)]


def test_batches_are_int64_shifted_windows(two_sources):
    cfg = loader_config([(two_sources[0], 1.0)], seq_len=SEQ, batch=3)
    loader = build_train_loader(cfg, 0, 1)
    batch = next(iter(loader))
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.int64
    assert batch["input_ids"].shape == batch["labels"].shape == (3, SEQ)
    assert (batch["input_ids"][:, 1:] == batch["labels"][:, :-1]).all()
    assert loader.tokenizer_spec == FAKE_TOKENIZER
    state = loader.state_dict()
    assert json.loads(json.dumps(state)) == state and state["samples"] == 3 and state["tokens"] == 3 * SEQ


@pytest.mark.parametrize("workers", [0, 2])
def test_iterating_leaves_the_global_rng_alone(two_sources, workers):
    # The training loop's dropout draws from the global torch RNG, which a checkpoint restores;
    # a loader drawing from it too (a DataLoader's base seed) would make resumed runs diverge.
    cfg = loader_config([(two_sources[0], 1.0)], seq_len=SEQ, batch=3, workers=workers)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    take(build_train_loader(cfg, 0, 1), 2)
    assert torch.equal(torch.get_rng_state(), before)


def test_exact_resume_two_ranks_two_workers_and_a_world_size_change(two_sources):
    sources = [(two_sources[0], 2.0), (two_sources[1], 1.0)]

    def loaders(world: int, workers: int):
        cfg = loader_config(sources, seq_len=SEQ, batch=2, workers=workers)
        return [build_train_loader(cfg, r, world) for r in range(world)]

    # Uninterrupted: 2 ranks x 2 workers, 30 rounds (more than an epoch of each source).
    reference = global_order([take(ld, 30) for ld in loaders(2, 2)])
    assert len(reference) == 30 * 2 * 2

    # Interrupted after 11 rounds: the state is the same on both ranks and counts only yielded batches.
    first = loaders(2, 2)
    got = [take(ld, 11) for ld in first]
    states = [ld.state_dict() for ld in first]
    assert states[0] == states[1] and states[0]["samples"] == 11 * 2 * 2
    resumed = loaders(2, 2)
    for ld in resumed:
        ld.load_state_dict(states[0])
    got = [g + take(ld, 19) for g, ld in zip(got, resumed)]
    assert global_order(got) == reference

    # Resumed on one rank with one worker, then on three ranks in-process: the global order goes on.
    single = loaders(1, 1)[0]
    single.load_state_dict(states[0])
    cont = global_order([take(single, 6)])
    assert cont == reference[44:44 + 12]
    three = loaders(3, 0)
    for ld in three:
        ld.load_state_dict(single.state_dict())
    cont3 = global_order([take(ld, 4) for ld in three])
    assert cont3 == reference[56:56 + 24]


def test_epochs_roll_over_and_reshuffle(two_sources):
    cfg = loader_config([(two_sources[1], 1.0)], seq_len=SEQ, batch=5)
    seen = [i for b in take(build_train_loader(cfg, 0, 1), 10) for _, i in sample_ids(b)]
    first, second = seen[:25], seen[25:50]
    assert sorted(first) == sorted(second) == list(range(25))
    assert first != second


def test_mixing_proportions_follow_the_weights(two_sources):
    cfg = loader_config([(two_sources[0], 3.0), (two_sources[1], 1.0)], seq_len=SEQ, batch=8)
    ids = [s for b in take(build_train_loader(cfg, 0, 1), 250) for s, _ in sample_ids(b)]
    share = ids.count(0) / len(ids)
    assert abs(share - 0.75) < 0.03, share
    # A different seed gives a different stream.
    other = loader_config([(two_sources[0], 3.0), (two_sources[1], 1.0)], seq_len=SEQ, batch=8, seed=99)
    assert sample_ids(take(build_train_loader(other, 0, 1), 1)[0]) != sample_ids(take(build_train_loader(cfg, 0, 1), 1)[0])


def test_val_loader_is_fixed_finite_and_split_across_ranks(two_sources):
    cfg = loader_config([(two_sources[0], 1.0)], val=two_sources[1], seq_len=SEQ, batch=2)
    vals = [build_val_loader(cfg, r, 2) for r in range(2)]
    assert [len(v) for v in vals] == [3, 3]  # eval.batches = 3
    passes = [[sample_ids(b["input_ids"]) for b in v] for v in vals]
    assert passes == [[sample_ids(b["input_ids"]) for b in v] for v in vals]  # the same every pass
    flat = [i for per_rank in passes for b in per_rank for i in b]
    assert len(flat) == len(set(flat)) == 12
    big = loader_config([(two_sources[0], 1.0)], val=two_sources[1], seq_len=SEQ, batch=20)
    with pytest.raises(DataError, match=r"data.val: .* has 25 sequences, fewer than one round of 2 ranks x micro_batch_size 20"):
        build_val_loader(big, 0, 2)
    assert len(build_val_loader(loader_config([(two_sources[0], 1.0)], seq_len=SEQ), 0, 1)) == 0


def test_seq_len_and_tokenizer_mismatches_say_what_to_change(two_sources, tmp_path, gpt2_vocab):
    with pytest.raises(DataError, match=r"data.train\[0\].path: .* seq_len 16 but this run uses 32 .*set train.seq_len: 16.*--seq-len 32"):
        build_train_loader(loader_config([(two_sources[0], 1.0)], seq_len=32), 0, 1)
    other = make_shard_set(tmp_path / "other", numbered_samples(10, SEQ, 2), per_shard=10,
                           tokenizer=dict(FAKE_TOKENIZER, fingerprint="e" * 64, kind="bpe", path="/tok"))
    with pytest.raises(DataError, match=r"different tokenizers .*a: gpt2 ffffffffffff; .*other: bpe eeeeeeeeeeee"):
        build_train_loader(loader_config([(two_sources[0], 1.0), (other, 1.0)], seq_len=SEQ), 0, 1)
    gpt2 = load_tokenizer(TokenizerConfig(kind="gpt2", path=str(gpt2_vocab)))
    with pytest.raises(DataError, match=r"made with tokenizer bpe at /tok .* set tokenizer.kind / tokenizer.path"):
        check_tokenizer_matches(read_manifest(other).tokenizer, gpt2)
    check_tokenizer_matches(gpt2.spec(), gpt2)


def test_corrupt_shards_stop_with_the_shard_named_or_are_skipped(tmp_path):
    d = make_shard_set(tmp_path / "c", numbered_samples(30, SEQ, 0), per_shard=10)
    shards = read_manifest(d).shards
    truncated = d / shards[1].name
    truncated.write_bytes(truncated.read_bytes()[:-3000])
    flipped = d / shards[2].name
    raw = bytearray(flipped.read_bytes())
    raw[700] ^= 1
    flipped.write_bytes(raw)
    with pytest.raises(DataError, match=rf"shard .*{shards[1].name}: .*truncated.*data.skip_corrupt_shards: true"):
        build_train_loader(loader_config([(d, 1.0)], seq_len=SEQ), 0, 1)
    skip = loader_config([(d, 1.0)], seq_len=SEQ, batch=5, extra=["data.skip_corrupt_shards=true"])
    loader = build_train_loader(skip, 0, 1)
    assert len(loader.skipped_shards) == 2
    assert shards[1].name in loader.skipped_shards[0] and "sha256" in loader.skipped_shards[1]
    ids = {i for b in take(loader, 4) for _, i in sample_ids(b)}
    assert ids == set(range(10))  # only the good shard's samples, an epoch of them twice
    # Without skipping, the bit flip is caught by the checksum when the shard is first read.
    truncated.unlink()
    d2 = make_shard_set(tmp_path / "d", numbered_samples(10, SEQ, 0), per_shard=10)
    bad = d2 / read_manifest(d2).shards[0].name
    raw = bytearray(bad.read_bytes())
    raw[700] ^= 1
    bad.write_bytes(raw)
    with pytest.raises(DataError, match=rf"shard .*{bad.name}: sha256 .* does not match"):
        next(iter(build_train_loader(loader_config([(d2, 1.0)], seq_len=SEQ), 0, 1)))


def test_uint32_shards_load_like_uint16(tmp_path):
    big = numbered_samples(8, SEQ, 0)
    big[:, 5] = 70000
    # ids past 65535 need a vocabulary that has them (the loader checks ids against it)
    d = make_shard_set(tmp_path / "u32", big, per_shard=8, dtype="uint32", tokenizer=dict(FAKE_TOKENIZER, vocab_size=100_000))
    batch = next(iter(build_train_loader(loader_config([(d, 1.0)], seq_len=SEQ, batch=8), 0, 1)))
    assert (batch["input_ids"][:, 5] == 70000).all()
    assert np.array_equal(np.sort(batch["input_ids"][:, 2].numpy()), np.arange(8))
