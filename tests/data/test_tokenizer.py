import json

import pytest

from gpt_dist.config import TokenizerConfig
from gpt_dist.data.tokenizer import GPT2_VOCAB_ENV, load_tokenizer, token_dtype
from gpt_dist.errors import UserError


def test_gpt2_from_file_matches_tiktoken_reference(gpt2_vocab, monkeypatch):
    monkeypatch.delenv(GPT2_VOCAB_ENV, raising=False)
    tok = load_tokenizer(TokenizerConfig(kind="gpt2", path=str(gpt2_vocab)))
    assert tok.encode("Hello world") == [15496, 995]
    assert (tok.vocab_size, tok.eot_id) == (50257, 50256)
    assert tok.encoding.n_vocab == 50257  # the tiktoken.Encoding the HF exporter uses
    spec = tok.spec()
    assert json.loads(json.dumps(spec)) == spec
    assert spec["kind"] == "gpt2" and spec["path"] == str(gpt2_vocab.resolve()) and len(spec["fingerprint"]) == 64


def test_gpt2_env_var_gives_the_same_fingerprint_as_the_path(gpt2_vocab, monkeypatch):
    monkeypatch.setenv(GPT2_VOCAB_ENV, str(gpt2_vocab))
    from_env = load_tokenizer(TokenizerConfig(kind="gpt2"))
    from_path = load_tokenizer(TokenizerConfig(kind="gpt2", path=str(gpt2_vocab)))
    assert from_env.fingerprint == from_path.fingerprint
    assert from_env.path == str(gpt2_vocab.resolve())


def test_special_token_text_in_documents_stays_text_and_eot_decodes(gpt2_vocab):
    tok = load_tokenizer(TokenizerConfig(kind="gpt2", path=str(gpt2_vocab)))
    ids = tok.encode("a <|endoftext|> b")
    assert tok.eot_id not in ids  # raw text cannot forge a document boundary
    assert tok.decode(ids) == "a <|endoftext|> b"
    assert tok.decode(tok.encode("x") + [tok.eot_id]) == "x<|endoftext|>"
    assert tok.encode_batch(["Hello world", "a"]) == [[15496, 995], tok.encode("a")]
    tok.num_threads = 1
    assert tok.encode_batch(["Hello world"]) == [[15496, 995]]


def test_gpt2_errors_name_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(GPT2_VOCAB_ENV, raising=False)
    with pytest.raises(UserError, match=r"tokenizer.path=.*nope.tiktoken: no such file"):
        load_tokenizer(TokenizerConfig(kind="gpt2", path=str(tmp_path / "nope.tiktoken")))
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("this is not base64 at all\n")
    with pytest.raises(UserError, match="not a tiktoken vocabulary file"):
        load_tokenizer(TokenizerConfig(kind="gpt2", path=str(bad)))
    monkeypatch.setenv(GPT2_VOCAB_ENV, str(tmp_path / "missing.tiktoken"))
    with pytest.raises(UserError, match=r"\$GPT_DIST_GPT2_VOCAB=.*missing.tiktoken: no such file"):
        load_tokenizer(TokenizerConfig(kind="gpt2"))


def test_trained_kinds_need_a_path():
    with pytest.raises(UserError, match="tokenizer.path: required for kind sentencepiece.*train-tokenizer"):
        load_tokenizer(TokenizerConfig(kind="sentencepiece"))


def test_token_dtype():
    assert token_dtype(50257) == "uint16"
    assert token_dtype(65536) == "uint16"
    assert token_dtype(65537) == "uint32"
    assert token_dtype(50257, "uint32") == "uint32"
    with pytest.raises(UserError, match="uint16 holds ids below 65536 but the tokenizer has 100000 ids; use dtype: uint32"):
        token_dtype(100000, "uint16")
