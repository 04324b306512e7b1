"""Fixtures for the SFT / DPO tests: the sample data sets, a BPE tokenizer trained on them, and
one SFT run (trained once per session) whose checkpoint the generation, chat and DPO tests use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finetune_helpers import TOKENIZER_VOCAB, one_thread, tiny_config

from gpt_dist.config import TokenizerConfig
from gpt_dist.data.tokenizer import load_tokenizer
from gpt_dist.finetune.sample_data import cpt_documents, dpo_records, sft_records, write_jsonl, write_samples

SFT_STEPS = 300


@pytest.fixture(scope="session")
def sample_files(tmp_path_factory) -> dict[str, Path]:
    return write_samples(tmp_path_factory.mktemp("finetune_sample"))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A byte-level BPE of TOKENIZER_VOCAB ids trained (by `train-tokenizer`'s code) on the sample texts."""
    from gpt_dist.data.tokenizer_training import TokenizerTrainingConfig, train_tokenizer

    work = tmp_path_factory.mktemp("bpe")
    texts = [json.dumps(r) for r in sft_records()[0] + sft_records()[1] + dpo_records()[0] + dpo_records()[1]]
    texts += [d["text"] for d in cpt_documents(50)]
    texts.append("System: User: Assistant: Hello there. Say hi. Be brief. Again.")
    write_jsonl(work / "text.jsonl", [{"text": t} for t in texts])
    train_tokenizer([str(work / "text.jsonl")], work / "tok", TokenizerTrainingConfig(kind="bpe", vocab_size=TOKENIZER_VOCAB))
    return work / "tok"


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    return load_tokenizer(TokenizerConfig(kind="bpe", path=str(tokenizer_dir)))


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory, sample_files, tokenizer_dir) -> Path:
    """The run dir of SFT_STEPS steps of SFT on the sample instruction set (checkpoint in run/ckpt)."""
    from gpt_dist.engine.trainer import train

    run_dir = tmp_path_factory.mktemp("sft") / "run"
    cfg = tiny_config(run_dir, "sft", tokenizer_dir, [sample_files["sft_train"]], val=sample_files["sft_val"],
                      steps=SFT_STEPS, extra=["log.every_steps=10"])
    with one_thread():
        result = train(cfg)
    assert result.step == SFT_STEPS
    return run_dir
