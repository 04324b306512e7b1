"""The exported Hugging Face tokenizer gives our ids, for every kind of tokenizer we train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conversion_helpers import MIXED_TEXTS, corpus, train_byte_bpe, train_sentencepiece
from transformers import AutoTokenizer

from gpt_dist.checkpoint.tokenizer_files import chat_template_of, load_our_tokenizer, tokenizer_spec_of
from gpt_dist.config import TokenizerConfig
from gpt_dist.conversion.hf_tokenizer import save_hf_tokenizer
from gpt_dist.data.tokenizer import load_tokenizer
from gpt_dist.errors import CheckpointError

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"


def _assert_same_ids(ours, out_dir):
    hf = AutoTokenizer.from_pretrained(out_dir)  # HF_HUB_OFFLINE=1 (tests/conftest.py): no network
    for text in MIXED_TEXTS:
        ids = ours.encode(text)
        assert hf(text)["input_ids"] == ids, text
        assert hf.decode(ids) == ours.decode(ids)
    assert hf.eos_token_id == ours.eot_id
    return hf


def test_gpt2_tokenizer_exports_with_the_same_ids(gpt2_tokenizer, tmp_path):
    save_hf_tokenizer(gpt2_tokenizer, tmp_path, chat_template=None, model_max_length=1024)
    hf = _assert_same_ids(gpt2_tokenizer, tmp_path)
    assert hf("Hello world")["input_ids"] == [15496, 995]
    assert hf.convert_tokens_to_ids("<|endoftext|>") == 50256
    assert len(hf) == 50257
    conf = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert conf["tokenizer_class"] == "PreTrainedTokenizerFast"  # loadable by transformers 4.x too


def test_byte_level_bpe_tokenizer_exports_with_the_same_ids(tmp_path):
    train_byte_bpe(tmp_path / "tokenizer.json")
    ours = load_tokenizer(TokenizerConfig(kind="bpe", path=str(tmp_path / "tokenizer.json")))
    save_hf_tokenizer(ours, tmp_path / "hf", chat_template=None, model_max_length=64)
    _assert_same_ids(ours, tmp_path / "hf")


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
@pytest.mark.parametrize("normalization", ["nmt_nfkc", "identity"])
def test_sentencepiece_tokenizer_exports_with_the_same_ids(tmp_path, model_type, normalization):
    model = train_sentencepiece(tmp_path / "spm", model_type, normalization)
    ours = load_tokenizer(TokenizerConfig(kind="sentencepiece", path=model))
    save_hf_tokenizer(ours, tmp_path / "hf", chat_template=None, model_max_length=64)
    hf = _assert_same_ids(ours, tmp_path / "hf")
    # Characters outside the vocabulary go through byte fallback on both sides.
    rare = "Ωμέγα ☃ ǅ"
    assert hf(rare)["input_ids"] == ours.encode(rare)


def test_a_conversion_that_would_change_ids_is_refused(tmp_path):
    # A tokenizer.json whose post-processor adds end-of-text in front: Hugging Face users would
    # get ids the model never saw in training.
    from tokenizers import Tokenizer, processors

    train_byte_bpe(tmp_path / "tokenizer.json")
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", eot)]
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer(TokenizerConfig(kind="bpe", path=str(tmp_path / "tokenizer.json")))
    with pytest.raises(CheckpointError, match="different ids"):
        save_hf_tokenizer(ours, tmp_path / "hf", chat_template=None, model_max_length=64)


def test_chat_template_is_exported_and_usable(gpt2_tokenizer, tmp_path):
    save_hf_tokenizer(gpt2_tokenizer, tmp_path, chat_template=CHAT_TEMPLATE, model_max_length=64)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    text = hf.apply_chat_template([{"role": "user", "content": "Xin chào"}], tokenize=False)
    assert text == "<|user|>Xin chào<|endoftext|>"
    assert chat_template_of(tmp_path) == CHAT_TEMPLATE


def test_import_recognises_the_gpt2_vocabulary(gpt2_tokenizer, tmp_path):
    save_hf_tokenizer(gpt2_tokenizer, tmp_path, chat_template=None, model_max_length=64)
    assert tokenizer_spec_of(tmp_path) == gpt2_tokenizer.spec()


def test_import_keeps_another_tokenizer_as_bpe(tmp_path):
    train_byte_bpe(tmp_path / "src.json")
    src = load_tokenizer(TokenizerConfig(kind="bpe", path=str(tmp_path / "src.json")))
    save_hf_tokenizer(src, tmp_path / "hf", chat_template=None, model_max_length=64)
    assert tokenizer_spec_of(tmp_path / "hf") is None  # nowhere to keep it
    spec = tokenizer_spec_of(tmp_path / "hf", copy_to=tmp_path / "kept")
    assert spec["kind"] == "bpe" and spec["path"] == str(tmp_path / "kept")
    kept = load_tokenizer(TokenizerConfig(kind="bpe", path=spec["path"]))
    assert kept.eot_id == src.eot_id
    assert all(kept.encode(t) == src.encode(t) for t in MIXED_TEXTS)


def test_gpt2_vocabulary_path_of_another_machine_is_not_needed(gpt2_tokenizer):
    spec = dict(gpt2_tokenizer.spec(), path="/cluster/home/someone/gpt2.tiktoken")
    tok = load_our_tokenizer(spec, Path("gpt_dist.json"))  # found through $GPT_DIST_GPT2_VOCAB instead
    assert tok.fingerprint == gpt2_tokenizer.fingerprint
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_our_tokenizer(dict(spec, fingerprint="0" * 64), Path("gpt_dist.json"))


@pytest.mark.parametrize("kind, model_type", [("sentencepiece", "bpe"), ("sentencepiece", "unigram"), ("bpe", "bpe")])
def test_tokenizers_from_train_tokenizer_export_with_the_same_ids(tmp_path, kind, model_type):
    # As `gpt-dist train-tokenizer` makes them, chat markers included.
    from gpt_dist.data.tokenizer_training import TokenizerTrainingConfig, train_tokenizer

    (tmp_path / "corpus.txt").write_text("\n\n".join(corpus(800)), encoding="utf-8")
    cfg = TokenizerTrainingConfig(
        kind=kind, model_type=model_type, vocab_size=400, special_tokens=["<|user|>", "<|assistant|>"], num_threads=1
    )
    ours = train_tokenizer([str(tmp_path / "corpus.txt")], tmp_path / "tok", cfg)
    save_hf_tokenizer(ours, tmp_path / "hf", chat_template=CHAT_TEMPLATE, model_max_length=64)
    hf = _assert_same_ids(ours, tmp_path / "hf")
    chat = "<|user|>Xin chào 你好<|assistant|>Hello!"
    assert hf(chat)["input_ids"] == ours.encode(chat)  # the markers are single tokens on both sides


def test_literal_end_of_text_in_text_is_the_documented_exception(gpt2_tokenizer, tmp_path):
    """docs/conversion.md: the exported tokenizer gives our ids for any text except a literal
    "<|endoftext|>" written inside it, which we encode as plain text and Hugging Face as the
    end-of-text token (its chat templates rely on that); split_special_tokens=True gives ours."""
    save_hf_tokenizer(gpt2_tokenizer, tmp_path, chat_template=None, model_max_length=1024)
    text = "a document that quotes <|endoftext|> in its text"
    ours = gpt2_tokenizer.encode(text)
    assert gpt2_tokenizer.eot_id not in ours  # plain text: a document cannot fake a boundary
    hf = AutoTokenizer.from_pretrained(tmp_path)
    theirs = hf(text)["input_ids"]
    assert gpt2_tokenizer.eot_id in theirs and theirs != ours
    split = AutoTokenizer.from_pretrained(tmp_path, split_special_tokens=True)
    assert split(text)["input_ids"] == ours
    assert hf("a document that quotes <|endo ftext|> in its text")["input_ids"] == gpt2_tokenizer.encode(
        "a document that quotes <|endo ftext|> in its text")
