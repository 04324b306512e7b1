"""A workspace with data/sample/train as the README's `gpt-dist bench --data` expects it."""

from pathlib import Path

import numpy as np
import pytest

SEQ_LEN = 64


@pytest.fixture(scope="session")
def bench_workspace(tmp_path_factory, gpt2_vocab) -> Path:
    """data/sample/{train,val}: small shard sets in the format `gpt-dist prepare` writes
    (written with the data package's ShardWriter), 25 sequences per shard."""
    from gpt_dist.config import TokenizerConfig
    from gpt_dist.data.shards import Manifest, ShardWriter, write_manifest
    from gpt_dist.data.tokenizer import load_tokenizer

    spec = load_tokenizer(TokenizerConfig(kind="gpt2", path=str(gpt2_vocab))).spec()
    ws = tmp_path_factory.mktemp("readme_bench")
    rng = np.random.default_rng(0)
    for split, n in (("train", 100), ("val", 20)):
        d = ws / "data" / "sample" / split
        w = ShardWriter(d, f"{split}-t00000-", SEQ_LEN, "uint16", sequences_per_shard=25)
        w.write(rng.integers(0, 50257, (n, SEQ_LEN + 1)))
        write_manifest(d, Manifest(split=split, seq_len=SEQ_LEN, dtype="uint16", tokenizer=spec, shards=w.close()))
    return ws
