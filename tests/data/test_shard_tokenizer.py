"""Training on tokenized shards takes the tokenizer their manifest names (gpt_dist.data.shard_tokenizer):
no `tokenizer:` section is needed, one that disagrees with the shards is an error naming the
manifest and the fix, a moved tokenizer directory is found through tokenizer.path, and the
checkpoint still records the tokenizer the exporter needs."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from gpt_dist.config import load_config
from gpt_dist.data.shard_tokenizer import shards_tokenizer
from gpt_dist.data.shards import read_manifest
from gpt_dist.errors import UserError

from data_helpers import english_doc, run_cli

VOCAB = 400


def _make(root: Path, name: str, seed: int, vocab: int = VOCAB) -> Path:
    """A sentencepiece tokenizer trained on a small English corpus, and shards prepared with it."""
    rng = random.Random(seed)
    (root / f"{name}.txt").write_text("\n\n".join(english_doc(rng, 80) for _ in range(80)) + "\n")
    assert run_cli("train-tokenizer", "--input", f"{name}.txt", "--kind", "sentencepiece", "--vocab-size",
                   str(vocab), "--output", f"{name}_tok", cwd=root) == 0
    assert run_cli("prepare", "--input", f"{name}.txt", "--txt-unit", "paragraph", "--tokenizer", "sentencepiece",
                   "--tokenizer-path", f"{name}_tok", "--seq-len", "64", "--val-fraction", "0.1", "--output",
                   f"data/{name}", cwd=root) == 0
    return root / "data" / name


@pytest.fixture(scope="module")
def sp_shards(tmp_path_factory) -> Path:
    return _make(tmp_path_factory.mktemp("sp"), "corpus", seed=0)


def run_config(shards: Path, run_dir: Path, *extra: str):
    return load_config(overrides=[
        "stage=pretrain", f"run_dir={run_dir}", f"data.train=[{{path: {shards / 'train'}}}]",
        f"data.val={shards / 'val'}", "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=64",
        f"model.vocab_size={VOCAB}", "model.vocab_pad_multiple=1", "model.attn_impl=sdpa", "train.seq_len=64",
        "train.micro_batch_size=2", "train.global_batch_size=2", "train.max_steps=2", "train.precision=fp32",
        "engine.zero_stage=0", "log.progress_bar=false", "eval.every_steps=2", "eval.batches=1", *extra,
    ])


def test_no_tokenizer_section_takes_the_manifests(sp_shards, tmp_path):
    tok = shards_tokenizer(run_config(sp_shards, tmp_path))
    spec = read_manifest(sp_shards / "train").tokenizer
    assert tok.kind == "sentencepiece" and tok.vocab_size == VOCAB
    assert tok.fingerprint == spec["fingerprint"] and tok.eot_id == spec["eot_id"]
    assert tok.path == spec["path"]


def test_gpt2_shards_need_no_vocabulary_variable(sample_shards, tmp_path, monkeypatch):
    monkeypatch.delenv("GPT_DIST_GPT2_VOCAB", raising=False)
    tok = shards_tokenizer(run_config(sample_shards, tmp_path, "train.seq_len=256", "model.block_size=256"))
    assert tok.kind == "gpt2" and tok.fingerprint == read_manifest(sample_shards / "train").tokenizer["fingerprint"]


def test_a_tokenizer_kind_that_disagrees_is_an_error(sp_shards, tmp_path):
    with pytest.raises(UserError, match=r"tokenizer.kind: gpt2, but the shards were made with a sentencepiece "
                                        r"tokenizer \(.*manifest.json\); delete the run config's tokenizer: section"):
        shards_tokenizer(run_config(sp_shards, tmp_path, "tokenizer.kind=gpt2"))


def test_a_tokenizer_path_to_another_tokenizer_is_an_error(sp_shards, tmp_path):
    other = _make(tmp_path, "other", seed=1, vocab=300).parent.parent / "other_tok"
    with pytest.raises(UserError, match=rf"tokenizer.path={other} is sentencepiece .* but the shards were made "
                                        r"with fingerprint"):
        shards_tokenizer(run_config(sp_shards, tmp_path, f"tokenizer.path={other}"))


def test_a_moved_tokenizer_is_found_through_tokenizer_path(sp_shards, tmp_path):
    # a copy of the shards whose manifests name a tokenizer directory that is gone
    moved = tmp_path / "shards"
    shutil.copytree(sp_shards, moved)
    for split in ("train", "val"):
        m = json.loads((moved / split / "manifest.json").read_text())
        m["tokenizer"]["path"] = str(tmp_path / "gone")
        (moved / split / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match=r"manifest.json: tokenizer.path .*gone .* does not exist on this machine; "
                                        r"set tokenizer.path in the run config"):
        shards_tokenizer(run_config(moved, tmp_path))
    tok = shards_tokenizer(run_config(moved, tmp_path, f"tokenizer.path={sp_shards.parent.parent / 'corpus_tok'}"))
    assert tok.fingerprint == read_manifest(sp_shards / "train").tokenizer["fingerprint"]


def test_training_records_the_manifests_tokenizer_with_the_checkpoint(sp_shards, tmp_path):
    from gpt_dist.checkpoint.model_loader import load_model
    from gpt_dist.engine.trainer import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(run_config(sp_shards, tmp_path / "run"))
    finally:
        torch.set_num_threads(before)
    assert result.step == 2
    loaded = load_model(tmp_path / "run" / "ckpt")  # what convert to-hf, generate and init_from read
    spec = read_manifest(sp_shards / "train").tokenizer
    assert loaded.metadata["tokenizer"]["fingerprint"] == spec["fingerprint"]
    text = "The model learns from books."
    assert loaded.tokenizer.decode(loaded.tokenizer.encode(text)) == text
