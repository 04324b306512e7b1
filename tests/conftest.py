"""Project-wide test set-up: the GPT-2 vocabulary file, offline mode, the repo root."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GPT2_VOCAB = REPO_ROOT.parent / "shared" / "data" / "gpt2.tiktoken"

# Nothing in the tests may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
if GPT2_VOCAB.is_file():
    os.environ.setdefault("GPT_DIST_GPT2_VOCAB", str(GPT2_VOCAB))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def gpt2_vocab() -> Path:
    if not GPT2_VOCAB.is_file():
        pytest.fail(f"GPT-2 vocabulary not found at {GPT2_VOCAB}; see shared/data/README.md")
    return GPT2_VOCAB
