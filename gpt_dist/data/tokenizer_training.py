"""`gpt-dist train-tokenizer`: a SentencePiece or byte-level BPE tokenizer from raw text.

Both trainers read a stream and keep a bounded, uniformly random sample of it
(`input_sentence_size` pieces), so memory does not grow with the corpus: SentencePiece samples
inside its trainer (reservoir sampling), the BPE path samples here before training. This is
what lets a 16 GB machine train on a corpus of many gigabytes.

    sentencepiece  model_type bpe or unigram; byte_fallback (no unknown characters: unseen ones
                   become UTF-8 byte pieces); identity normalisation and no whitespace folding,
                   so decode(encode(text)) == text, code and newlines included; the end-of-text
                   token is a control symbol, user special tokens are matched in text;
                   `sampling_alpha` > 0 records subword sampling (unigram) / BPE-dropout (bpe) in
                   the settings: `gpt-dist prepare` then samples segmentations of training text.
    bpe            GPT-2-style byte-level BPE from the `tokenizers` library.

`max_token_length` caps a piece's length in characters (SentencePiece's
max_sentencepiece_length, BpeTrainer's max_token_length): Chinese text has no spaces, and
without a cap whole phrases become single tokens.

The output directory (written under a temporary name, renamed when complete) holds the model
file and gpt_dist_tokenizer.json; `load_tokenizer(TokenizerConfig(kind, path=DIR))` loads it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from gpt_dist.config import TokenizerConfig
from gpt_dist.data.tokenizer import (
    BPE_MODEL_FILE,
    EOT_TOKEN,
    SENTENCEPIECE_MODEL_FILE,
    SETTINGS_FILE,
    SETTINGS_FORMAT,
    Tokenizer,
    load_tokenizer,
)
from gpt_dist.errors import UserError

log = logging.getLogger(__name__)

# SentencePiece skips sentences longer than this many bytes (its max_sentence_length default).
MAX_SENTENCE_BYTES = 4192
# A break opportunity when a line must be cut: after whitespace or sentence punctuation.
_BREAK = re.compile(r"(?<=[\s。！？；，、.!?;,])")


@dataclass
class TokenizerTrainingConfig:
    kind: str = "sentencepiece"
    vocab_size: int = 32000
    # sentencepiece only: "bpe" or "unigram".
    model_type: str = "bpe"
    byte_fallback: bool = True
    # Extra tokens matched in text (e.g. chat markers); the end-of-text token is always added.
    special_tokens: list[str] = field(default_factory=list)
    max_token_length: int = 16
    # Pieces of text (lines for sentencepiece, chunks of lines for bpe) sampled for training.
    input_sentence_size: int = 1_000_000
    # sentencepiece only: share of characters the vocabulary must cover (the rest: bytes / unk).
    character_coverage: float = 0.9995
    # sentencepiece only: > 0 enables subword sampling (unigram) / BPE-dropout (bpe) at prepare time.
    sampling_alpha: float = 0.0
    sampling_nbest_size: int = -1
    split_digits: bool = True
    text_key: str = "text"
    seed: int = 1234
    num_threads: int = 0  # 0 = all cores

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UserError(msg)

        need(self.kind in ("sentencepiece", "bpe"), f"--kind: {self.kind!r} is not sentencepiece or bpe")
        need(self.model_type in ("bpe", "unigram"), f"--model-type: {self.model_type!r} is not bpe or unigram")
        need(self.vocab_size >= 2 + len(self.special_tokens), f"--vocab-size {self.vocab_size} is too small")
        need(self.max_token_length >= 1, "--max-token-length must be >= 1 (e.g. 16; 4-8 for Chinese)")
        need(self.input_sentence_size >= 1, "--input-sentence-size must be >= 1")
        need(0.0 < self.character_coverage <= 1.0, "--character-coverage must be in (0, 1], e.g. 0.9995")
        need(0.0 <= self.sampling_alpha < 1.0, "--sampling-alpha must be in [0, 1): 0 disables sampling")
        need(EOT_TOKEN not in self.special_tokens, f"--special-tokens: {EOT_TOKEN} is added anyway; drop it")
        need(not (self.sampling_alpha and self.kind == "bpe"),
             "--sampling-alpha applies to --kind sentencepiece (BPE-dropout there); drop it for --kind bpe")


def cut_line(line: str, max_bytes: int) -> Iterator[str]:
    """`line` in pieces of at most `max_bytes` UTF-8 bytes, cut after spaces or punctuation if possible."""
    if len(line.encode("utf-8")) <= max_bytes:
        yield line
        return
    cur, size = [], 0
    for part in _BREAK.split(line):
        while part:
            b = len(part.encode("utf-8"))
            if size + b <= max_bytes:
                cur.append(part)
                size += b
                break
            if cur:
                yield "".join(cur)
                cur, size = [], 0
                continue
            # One unbreakable run longer than the limit: cut it by characters.
            n = max(1, len(part.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")))
            yield part[:n]
            part = part[n:]
    if cur:
        yield "".join(cur)


def sentence_stream(texts: Iterable[str], max_bytes: int = MAX_SENTENCE_BYTES) -> Iterator[str]:
    """Non-empty lines of every document, each cut to at most `max_bytes` bytes (SentencePiece input)."""
    for text in texts:
        for line in text.split("\n"):
            if line.strip():
                yield from cut_line(line, max_bytes)


def chunk_stream(texts: Iterable[str], max_bytes: int = 1024) -> Iterator[str]:
    """Documents in chunks of whole lines (newlines kept) up to about `max_bytes` (BPE input).

    Newlines stay in, so the BPE learns merges such as "\\n\\n" as GPT-2's vocabulary has.
    """
    for text in texts:
        cur, size = [], 0
        for line in text.splitlines(keepends=True):
            for piece in cut_line(line, max_bytes):
                b = len(piece.encode("utf-8"))
                if cur and size + b > max_bytes:
                    yield "".join(cur)
                    cur, size = [], 0
                cur.append(piece)
                size += b
        if cur:
            yield "".join(cur)


def reservoir_sample(items: Iterable[str], k: int, seed: int) -> tuple[list[str], int]:
    """A uniform sample of at most `k` items from a stream of unknown length (Algorithm R), and the count seen."""
    rng = random.Random(seed)
    sample: list[str] = []
    n = 0
    for n, item in enumerate(items, start=1):
        if len(sample) < k:
            sample.append(item)
        else:
            j = rng.randrange(n)
            if j < k:
                sample[j] = item
    return sample, n


class _Counter:
    """Wraps an iterator and counts what passes through it."""

    def __init__(self, it: Iterable[str]):
        self.it = iter(it)
        self.n = 0

    def __iter__(self):
        for x in self.it:
            self.n += 1
            yield x


def train_tokenizer(inputs: list[str], output: str | Path, cfg: TokenizerTrainingConfig, *,
                    overwrite: bool = False) -> Tokenizer:
    """Train on the documents of `inputs` (files, folders, globs; .txt = one document per paragraph)
    and write the tokenizer directory `output`. Returns the loaded tokenizer."""
    from gpt_dist.data.readers import bad_input_counts, iter_documents

    cfg.validate()
    out = Path(output)
    if out.exists() and not overwrite:
        raise UserError(f"--output {out}: already exists; choose another directory or pass --overwrite")
    texts, readers = iter_documents(inputs, text_key=cfg.text_key, txt_unit="paragraph")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if cfg.kind == "sentencepiece":
            stats = _train_sentencepiece(texts, tmp, cfg)
            model_file = SENTENCEPIECE_MODEL_FILE
        else:
            stats = _train_bpe(texts, tmp, cfg)
            model_file = BPE_MODEL_FILE
        stats["bad_input"] = bad_input_counts(readers)
        if stats["pieces_seen"] == 0:
            raise UserError(f"--input {' '.join(inputs)}: no text found (bad input: {stats['bad_input'] or 'none'})")
        settings = {
            "format": SETTINGS_FORMAT,
            "kind": cfg.kind,
            "model_file": model_file,
            "eot_token": EOT_TOKEN,
            "special_tokens": list(cfg.special_tokens),
            "sampling": {"alpha": cfg.sampling_alpha, "nbest_size": cfg.sampling_nbest_size}
            if cfg.kind == "sentencepiece" else None,
            "training": {**asdict(cfg), "inputs": [str(Path(p).resolve()) for p in inputs], **stats},
        }
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, ensure_ascii=False), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tok = load_tokenizer(TokenizerConfig(kind=cfg.kind, path=str(out)))
    log.info("trained %s", tok.describe())
    return tok


def _train_sentencepiece(texts: Iterable[str], out: Path, cfg: TokenizerTrainingConfig) -> dict:
    import sentencepiece as spm

    spm.set_random_generator_seed(cfg.seed)
    stream = _Counter(sentence_stream(texts))
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(stream),
            model_writer=model,
            vocab_size=cfg.vocab_size,
            model_type=cfg.model_type,
            byte_fallback=cfg.byte_fallback,
            character_coverage=cfg.character_coverage,
            control_symbols=[EOT_TOKEN],
            user_defined_symbols=list(cfg.special_tokens),
            unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
            input_sentence_size=cfg.input_sentence_size,
            shuffle_input_sentence=True,
            max_sentence_length=MAX_SENTENCE_BYTES,
            max_sentencepiece_length=cfg.max_token_length,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            split_digits=cfg.split_digits,
            num_threads=cfg.num_threads or (os.cpu_count() or 1),
            minloglevel=1,
        )
    except RuntimeError as e:
        msg = str(e).split("] ", 1)[-1]
        raise UserError(f"sentencepiece could not train: {msg}") from None
    (out / SENTENCEPIECE_MODEL_FILE).write_bytes(model.getvalue())
    return {"pieces_seen": stream.n, "pieces_sampled": min(stream.n, cfg.input_sentence_size)}


def _train_bpe(texts: Iterable[str], out: Path, cfg: TokenizerTrainingConfig) -> dict:
    from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    sample, seen = reservoir_sample(chunk_stream(texts), cfg.input_sentence_size, cfg.seed)
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size - len(cfg.special_tokens),
        special_tokens=[EOT_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=cfg.max_token_length,
        show_progress=False,
    )
    tok.train_from_iterator(sample, trainer=trainer, length=len(sample))
    if cfg.special_tokens:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in cfg.special_tokens])
    tok.save(str(out / BPE_MODEL_FILE))
    return {"pieces_seen": seen, "pieces_sampled": len(sample)}
