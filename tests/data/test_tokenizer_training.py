import json
import random
from pathlib import Path

import pytest

from gpt_dist.config import TokenizerConfig
from gpt_dist.data.shards import read_manifest
from gpt_dist.data.tokenizer import SETTINGS_FILE, load_tokenizer
from gpt_dist.data.tokenizer_training import (
    TokenizerTrainingConfig,
    chunk_stream,
    cut_line,
    reservoir_sample,
    sentence_stream,
    train_tokenizer,
)
from gpt_dist.errors import UserError

from data_helpers import english_doc, run_cli

EN = "the model learns language from text and data in many books about science history music and art".split()
VI = "mô hình học ngôn ngữ từ dữ liệu văn bản của người Việt Nam trong sách báo khoa học lịch sử".split()
ZH = list("我们的模型从大量中文文本数据中学习语言知识和科学历史音乐艺术")

# Round-trip probes: each language, code-like whitespace, characters never seen in training.
PROBES = [
    "the model learns from books",
    "mô hình học ngôn ngữ tiếng Việt",
    "我们的模型学习中文",
    "def f(x):\n    return  x  # two  spaces\n\n\tend",
    "unseen: Ωμέγα ☃ 😀 ქართული",
]


def corpus(rng: random.Random, n: int) -> list[str]:
    docs = []
    for i in range(n):
        if i % 3 == 0:
            docs.append(" ".join(rng.choice(EN) for _ in range(rng.randint(8, 20))) + ".")
        elif i % 3 == 1:
            docs.append(" ".join(rng.choice(VI) for _ in range(rng.randint(8, 20))) + ".")
        else:
            docs.append("".join(rng.choice(ZH) for _ in range(rng.randint(10, 30))) + "。")
    return docs


@pytest.fixture(scope="module")
def text_files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("tokcorpus")
    rng = random.Random(0)
    docs = corpus(rng, 900)
    a = d / "mixed.txt"
    a.write_text("\n\n".join(docs[:600]) + "\n", encoding="utf-8")
    b = d / "more.jsonl"
    b.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs[600:]), encoding="utf-8")
    return [a, b]


@pytest.mark.parametrize("kind,model_type", [("sentencepiece", "bpe"), ("sentencepiece", "unigram"), ("bpe", "bpe")])
def test_trained_tokenizer_round_trips_english_vietnamese_chinese(text_files, tmp_path, kind, model_type):
    cfg = TokenizerTrainingConfig(kind=kind, model_type=model_type, vocab_size=400, special_tokens=["<|im_start|>"],
                                  max_token_length=4, input_sentence_size=500, num_threads=1)
    tok = train_tokenizer([str(p) for p in text_files], tmp_path / "tok", cfg)
    assert tok.kind == kind and tok.vocab_size <= 400
    for text in PROBES:
        assert tok.decode(tok.encode(text)) == text, (kind, model_type, text)
    # The end-of-text token: one id, rendered as text, never produced by raw text.
    assert tok.decode(tok.encode("a") + [tok.eot_id] + tok.encode("b")) == "a<|endoftext|>b"
    assert tok.eot_id not in tok.encode("x <|endoftext|> y")
    # User special tokens are matched in text as one id.
    im = tok.encode("<|im_start|>")
    assert len(im) == 1 and im[0] != tok.eot_id
    # max_token_length caps learned pieces (special tokens and byte pieces aside).
    longest = max(len(tok.decode([i])) for i in range(tok.vocab_size) if i not in (tok.eot_id, im[0]))
    assert longest <= 4
    # The directory is self-describing: kind + path is all load_tokenizer needs.
    again = load_tokenizer(TokenizerConfig(kind=kind, path=str(tmp_path / "tok")))
    assert again.fingerprint == tok.fingerprint
    assert again.encode_batch(PROBES) == [tok.encode(p) for p in PROBES]
    settings = json.loads((tmp_path / "tok" / SETTINGS_FILE).read_text())
    assert settings["training"]["pieces_sampled"] == 500 < settings["training"]["pieces_seen"]
    if kind == "sentencepiece":
        assert Path(tok.model_path).is_file()
    else:
        assert Path(tok.tokenizer_json_path).is_file()


def test_different_vocabularies_have_different_fingerprints(text_files, tmp_path):
    a = train_tokenizer([str(text_files[0])], tmp_path / "a",
                        TokenizerTrainingConfig(kind="sentencepiece", vocab_size=350, num_threads=1))
    b = train_tokenizer([str(text_files[0])], tmp_path / "b",
                        TokenizerTrainingConfig(kind="sentencepiece", vocab_size=360, num_threads=1))
    assert a.fingerprint != b.fingerprint
    with pytest.raises(UserError, match="holds a sentencepiece tokenizer but tokenizer.kind is bpe; set tokenizer.kind: sentencepiece"):
        load_tokenizer(TokenizerConfig(kind="bpe", path=str(tmp_path / "a")))
    with pytest.raises(UserError, match="already exists"):
        train_tokenizer([str(text_files[0])], tmp_path / "a", TokenizerTrainingConfig(kind="bpe", vocab_size=300))


def test_bpe_dropout_is_recorded_and_only_applies_when_sampling(text_files, tmp_path):
    cfg = TokenizerTrainingConfig(kind="sentencepiece", model_type="bpe", vocab_size=400, sampling_alpha=0.5,
                                  num_threads=1)
    tok = train_tokenizer([str(text_files[0])], tmp_path / "drop", cfg)
    plain = train_tokenizer([str(text_files[0])], tmp_path / "plain",
                            TokenizerTrainingConfig(kind="sentencepiece", model_type="bpe", vocab_size=400, num_threads=1))
    assert tok.settings["sampling"]["alpha"] == 0.5
    # Sampling picks a segmentation, it does not change what an id means: same fingerprint.
    assert tok.fingerprint == plain.fingerprint
    text = "the model learns language from text and data in many books"
    assert tok.encode_batch([text] * 3) == [tok.encode(text)] * 3
    sampled = tok.encode_batch([text] * 20, sample=True)
    assert len({tuple(s) for s in sampled}) > 1
    assert all(tok.decode(s) == text for s in sampled)


def test_training_errors_are_user_errors(text_files, tmp_path):
    with pytest.raises(UserError, match="sentencepiece could not train: .*Vocabulary size"):
        train_tokenizer([str(text_files[0])], tmp_path / "huge",
                        TokenizerTrainingConfig(kind="sentencepiece", vocab_size=50000, num_threads=1))
    assert not (tmp_path / "huge").exists()  # nothing half-written under the real name
    with pytest.raises(UserError, match="--sampling-alpha applies to --kind sentencepiece"):
        train_tokenizer([str(text_files[0])], tmp_path / "x", TokenizerTrainingConfig(kind="bpe", sampling_alpha=0.1))


def test_text_streams_bound_piece_sizes():
    line = "数据" * 3000  # one unbroken Chinese run of 18 kB
    pieces = list(cut_line(line, 4192))
    assert "".join(pieces) == line and all(len(p.encode()) <= 4192 for p in pieces)
    words = "word " * 2000
    assert "".join(cut_line(words, 100)) == words and all(len(p.encode()) <= 100 for p in cut_line(words, 100))
    assert list(sentence_stream(["a\n\nb c\n"])) == ["a", "b c"]
    assert list(chunk_stream(["l1\nl2\n", "x"], max_bytes=4)) == ["l1\n", "l2\n", "x"]
    sample, seen = reservoir_sample((str(i) for i in range(1000)), 10, seed=0)
    assert seen == 1000 and len(sample) == 10 and len(set(sample)) == 10
    assert max(int(s) for s in sample) > 100  # drawn from the whole stream, not its head


def test_train_tokenizer_then_prepare_with_it_as_in_the_readme(readme_dir, capsys):
    """`gpt-dist train-tokenizer --input corpus.txt --kind sentencepiece --vocab-size 400 --output tokenizer`,
    then `gpt-dist prepare --input corpus.txt --txt-unit paragraph --tokenizer sentencepiece
    --tokenizer-path tokenizer --seq-len 64 --val-fraction 0.1 --output data/mine` and `gpt-dist inspect data/mine`."""
    rng = random.Random(1)
    paragraphs = []
    for i in range(120):
        if i % 3 == 0:
            paragraphs.append(english_doc(rng, 80))
        elif i % 3 == 1:
            paragraphs.append(" ".join(rng.choice(VI) for _ in range(60)) + ".")
        else:
            paragraphs.append("".join(rng.choice(ZH) for _ in range(120)) + "。")
    (readme_dir / "corpus.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    rc = run_cli("train-tokenizer", "--input", "corpus.txt", "--kind", "sentencepiece", "--vocab-size", "400",
                 "--output", "tokenizer", cwd=readme_dir)
    assert rc == 0
    tok = load_tokenizer(TokenizerConfig(kind="sentencepiece", path=str(readme_dir / "tokenizer")))
    assert tok.vocab_size == 400
    prepare = "gpt-dist prepare --input corpus.txt --txt-unit paragraph --tokenizer sentencepiece --tokenizer-path tokenizer --seq-len 64 --val-fraction 0.1 --output data/mine"  # noqa: E501
    rc = run_cli(*prepare.split()[1:], cwd=readme_dir)
    assert rc == 0
    m = read_manifest(readme_dir / "data/mine/train")
    assert m.tokenizer["kind"] == "sentencepiece" and m.tokenizer["fingerprint"] == tok.fingerprint
    assert m.sources["corpus"]["documents_read"] == 120
    # Gopher's rules apply to English only: the Vietnamese and Chinese paragraphs all pass them.
    assert m.sources["corpus"]["after_filters"] >= 80
    capsys.readouterr()
    assert run_cli("inspect", "data/mine", cwd=readme_dir) == 0
    out = capsys.readouterr().out
    shown = out.split("first tokens")[1].split("\n", 1)[1].splitlines()[0].strip()
    assert len(shown) > 10 and any(shown[:10] in p for p in paragraphs)
