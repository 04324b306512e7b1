"""Bad data is named where it is: a token id outside the vocabulary (or in its padding rows),
an error met in a DataLoader worker, shards of another tokenizer."""

from __future__ import annotations

from itertools import islice

import pytest
from data_helpers import FAKE_TOKENIZER, loader_config, make_shard_set, numbered_samples

from gpt_dist.config import TokenizerConfig
from gpt_dist.data.shard_loader import build_train_loader, build_val_loader, check_tokenizer_matches
from gpt_dist.data.shards import read_manifest
from gpt_dist.data.tokenizer import load_tokenizer
from gpt_dist.errors import DataError

SEQ = 16


@pytest.mark.parametrize("bad_id", [50300, 60000], ids=["vocab_padding", "past_the_model"])
@pytest.mark.parametrize("workers", [0, 1])
def test_token_id_outside_the_vocabulary_names_the_shard(tmp_path, bad_id, workers):
    samples = numbered_samples(20, SEQ, source=0)
    samples[13, 5] = bad_id  # second shard (10 per shard), sequence 3
    d = make_shard_set(tmp_path / "s", samples, per_shard=10)
    bad = d / read_manifest(d).shards[1].name
    loader = build_train_loader(loader_config([(d, 1.0)], seq_len=SEQ, batch=4, workers=workers), 0, 1)
    with pytest.raises(DataError) as e:
        list(islice(iter(loader), 10))
    msg = str(e.value)
    assert msg.startswith(f"shard {bad}: token id {bad_id} (sequence 3, position 5) is outside the vocabulary of "
                          "50257 tokens")
    assert "gpt-dist prepare" in msg
    assert "Caught" not in msg and "Traceback" not in msg and "worker process" not in msg


def test_validation_shards_are_checked_too(tmp_path):
    samples = numbered_samples(20, SEQ, source=0)
    samples[0, 0] = 50257
    d = make_shard_set(tmp_path / "v", samples, per_shard=20)
    train = make_shard_set(tmp_path / "t", numbered_samples(20, SEQ, source=1), per_shard=20)
    val = build_val_loader(loader_config([(train, 1.0)], val=d, seq_len=SEQ), 0, 1)
    with pytest.raises(DataError, match=r"token id 50257 \(sequence 0, position 0\) is outside the vocabulary"):
        list(val)


def test_a_corrupt_shard_read_by_a_worker_raises_its_own_message(tmp_path):
    d = make_shard_set(tmp_path / "c", numbered_samples(20, SEQ, 0), per_shard=10)
    bad = d / read_manifest(d).shards[0].name
    raw = bytearray(bad.read_bytes())
    raw[700] ^= 1
    bad.write_bytes(raw)
    loader = build_train_loader(loader_config([(d, 1.0)], seq_len=SEQ, workers=2), 0, 1)
    with pytest.raises(DataError) as e:
        list(islice(iter(loader), 10))
    assert str(e.value).startswith(f"shard {bad}: sha256 ")


def test_tokenizer_mismatch_names_the_sources(tmp_path, gpt2_vocab):
    other = dict(FAKE_TOKENIZER, fingerprint="e" * 64, kind="bpe", path="/tok")
    a = make_shard_set(tmp_path / "a", numbered_samples(10, SEQ, 0), per_shard=10, tokenizer=other)
    b = make_shard_set(tmp_path / "b", numbered_samples(10, SEQ, 1), per_shard=10, tokenizer=other)
    loader = build_train_loader(loader_config([(a, 1.0), (b, 1.0)], seq_len=SEQ), 0, 1)
    gpt2 = load_tokenizer(TokenizerConfig(kind="gpt2", path=str(gpt2_vocab)))
    with pytest.raises(DataError, match=rf"^the shards of data.train\[0\] \({a}\), data.train\[1\] \({b}\) were made "
                                        r"with tokenizer bpe at /tok"):
        check_tokenizer_matches(loader.tokenizer_spec, gpt2)
