import hashlib
import json

import pytest

from gpt_dist.config import TokenizerConfig
from gpt_dist.data.tokenizer import (
    GPT2_VOCAB_ENV,
    GPT2_VOCAB_SHA256,
    PACKAGED_GPT2_VOCAB,
    load_tokenizer,
    portable_spec,
    token_dtype,
)
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


def _no_download(monkeypatch):
    import tiktoken

    def offline(name):
        raise OSError(f"urlopen error [Errno -3] Temporary failure in name resolution ({name})")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)


def test_gpt2_ships_with_the_package_and_needs_no_variable_offline(gpt2_vocab, monkeypatch):
    monkeypatch.delenv(GPT2_VOCAB_ENV, raising=False)
    _no_download(monkeypatch)
    tok = load_tokenizer(TokenizerConfig(kind="gpt2"))
    assert tok.encode("Hello world") == [15496, 995] and tok.path is None
    assert tok.fingerprint == load_tokenizer(TokenizerConfig(kind="gpt2", path=str(gpt2_vocab))).fingerprint
    assert portable_spec(tok.spec())["path"] is None
    assert hashlib.sha256(PACKAGED_GPT2_VOCAB.read_bytes()).hexdigest() == GPT2_VOCAB_SHA256


def test_packaged_vocabulary_is_checked_by_its_sha256(gpt2_vocab, tmp_path, monkeypatch):
    import gpt_dist.data.tokenizer as tokenizer

    monkeypatch.delenv(GPT2_VOCAB_ENV, raising=False)
    _no_download(monkeypatch)
    damaged = tmp_path / "gpt2.tiktoken"
    damaged.write_bytes(gpt2_vocab.read_bytes()[:-40] + b"\n")
    monkeypatch.setattr(tokenizer, "PACKAGED_GPT2_VOCAB", damaged)
    with pytest.raises(UserError, match=r"gpt2.tiktoken: sha256 .* is not the GPT-2 vocabulary's .*reinstall gpt_dist"):
        load_tokenizer(TokenizerConfig(kind="gpt2"))


def test_missing_vocabulary_error_is_one_short_sentence_with_the_fix(tmp_path, monkeypatch):
    import gpt_dist.data.tokenizer as tokenizer

    monkeypatch.delenv(GPT2_VOCAB_ENV, raising=False)
    _no_download(monkeypatch)
    monkeypatch.setattr(tokenizer, "PACKAGED_GPT2_VOCAB", tmp_path / "gone.tiktoken")
    with pytest.raises(UserError) as e:
        load_tokenizer(TokenizerConfig(kind="gpt2"))
    msg = str(e.value)
    assert f"set ${GPT2_VOCAB_ENV} to a gpt2.tiktoken file" in msg
    assert "urlopen" not in msg and len(msg) < 150 and msg.count(";") <= 1


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
