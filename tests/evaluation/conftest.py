"""Fixtures of the evaluation tests: a tiny model with known weights, and a workspace laid out as
the README's commands expect it (data/sample, runs/sample/ckpt, hellaswag_val.jsonl)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from testutil import write_shard_set

from gpt_dist.config import ModelConfig, TokenizerConfig, resolve_model_config
from gpt_dist.model.gpt import GPT


@pytest.fixture(scope="session")
def gpt2_tokenizer(gpt2_vocab):
    from gpt_dist.data.tokenizer import load_tokenizer

    return load_tokenizer(TokenizerConfig(kind="gpt2", path=str(gpt2_vocab)))


@pytest.fixture(scope="session")
def hf_tokenizer_files(tmp_path_factory, gpt2_tokenizer) -> Path:
    """The GPT-2 tokenizer as Hugging Face files (written once; copied next to each model)."""
    from gpt_dist.conversion.hf_tokenizer import save_hf_tokenizer

    out = tmp_path_factory.mktemp("gpt2_hf_tokenizer")
    save_hf_tokenizer(gpt2_tokenizer, out, chat_template=None, model_max_length=1024)
    return out


def save_as_hf(model: GPT, out: Path, tokenizer_files: Path) -> Path:
    """`model` as `save_pretrained` writes it, with the GPT-2 tokenizer files."""
    from gpt_dist.benchmark.hf_reference import build_hf_twin

    build_hf_twin(model).save_pretrained(str(out))
    for f in tokenizer_files.iterdir():
        shutil.copy(f, out / f.name)
    return out


@pytest.fixture
def hf_dir_of(tmp_path, hf_tokenizer_files):
    """model -> a Hugging Face directory holding it and the GPT-2 tokenizer."""
    return lambda model, name="hf": save_as_hf(model, tmp_path / name, hf_tokenizer_files)


@pytest.fixture(scope="session")
def tiny_model() -> GPT:
    torch.manual_seed(1234)
    return GPT(resolve_model_config(ModelConfig(preset="tiny"))).eval()


HELLASWAG_LIKE = [
    {"ctx": "A man is sitting on a roof. He", "endings": ["is using wrap to wrap a pair of skis.",
     "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "label": 3},
    {"ctx": "The cat", "endings": ["sat on the mat.", "flew to the moon and back again twice.", "barked."], "label": 0},
    {"ctx": "def add(a, b):", "endings": ["return a + b", "print('hello')"], "label": 0},
    {"ctx": "Water boils at", "endings": ["100 degrees Celsius at sea level.", "a very low temperature.",
     "midnight."], "label": 0},
    {"ctx": "", "endings": ["Hello world.", "Goodbye."], "label": 1},
]


VAL_WINDOWS = 24  # validation sequences of SEQ_LEN + 1 tokens
SEQ_LEN = 64  # the tiny model's block_size


@pytest.fixture(scope="session")
def val_windows() -> torch.Tensor:
    """The validation sequences of the workspace's data/sample, (VAL_WINDOWS, SEQ_LEN + 1) int64."""
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, 50257, (VAL_WINDOWS, SEQ_LEN + 1), generator=g)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, tiny_model, hf_tokenizer_files, gpt2_tokenizer, val_windows) -> Path:
    """A folder laid out as the README's commands expect: data/sample/{train,val} shard sets
    (small, written directly in the format `gpt-dist prepare` writes), a gpt_dist checkpoint of
    `tiny_model` at runs/sample/ckpt standing in for the sample run (written by the conversion
    package's import), and a HellaSwag-format file."""
    from gpt_dist.conversion import import_hf

    ws = tmp_path_factory.mktemp("readme_eval")
    g = torch.Generator().manual_seed(8)
    write_shard_set(ws / "data/sample/train", torch.randint(0, 50257, (40, SEQ_LEN + 1), generator=g).numpy(),
                    gpt2_tokenizer)
    write_shard_set(ws / "data/sample/val", val_windows.numpy(), gpt2_tokenizer)
    hf = save_as_hf(tiny_model, tmp_path_factory.mktemp("sample_hf"), hf_tokenizer_files)
    import_hf(hf, ws / "runs" / "sample" / "ckpt")
    (ws / "hellaswag_val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HELLASWAG_LIKE), encoding="utf-8")
    return ws
