"""One small tokenizer interface over tiktoken's GPT-2 BPE, SentencePiece and byte-level BPE.

    tok = load_tokenizer(TokenizerConfig(kind="gpt2"))
    ids = tok.encode("Hello world")            # [15496, 995]
    tok.decode(ids + [tok.eot_id])             # "Hello world<|endoftext|>"

Every tokenizer has `kind`, `vocab_size`, `eot_id`, `encode`, `encode_batch`, `decode`, a
`fingerprint` (sha256 of the vocabulary and of the settings that change what an id means) and
`spec()`, the JSON written into shard manifests and checkpoints. Training on shards whose
fingerprint differs from the run's tokenizer is refused (gpt_dist.data.shard_loader).

`encode` is "ordinary": the text of a special token (e.g. "<|endoftext|>" inside a document) is
encoded as plain text, so raw data can never forge a document boundary. The packer appends
`eot_id` itself.

A directory written by `gpt-dist train-tokenizer` holds the model file and
`gpt_dist_tokenizer.json` (kind, end-of-text token, training settings); `load_tokenizer` needs
only `TokenizerConfig(kind=..., path=DIR)`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

from gpt_dist.config import TokenizerConfig
from gpt_dist.errors import UserError

EOT_TOKEN = "<|endoftext|>"
GPT2_VOCAB_ENV = "GPT_DIST_GPT2_VOCAB"
# The GPT-2 vocabulary ships with the package, so nothing is downloaded and no variable is needed
# offline. Its sha256 is the one tiktoken itself checks its r50k_base / gpt2 download against.
PACKAGED_GPT2_VOCAB = Path(__file__).resolve().parents[1] / "resources" / "gpt2.tiktoken"
GPT2_VOCAB_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# Written by `gpt-dist train-tokenizer` next to the model file.
SETTINGS_FILE = "gpt_dist_tokenizer.json"
SETTINGS_FORMAT = 1
SENTENCEPIECE_MODEL_FILE = "spm.model"
BPE_MODEL_FILE = "tokenizer.json"

# tiktoken's own check of the GPT-2 vocabulary: "Hello world" must encode to these ids.
_GPT2_CHECK = ("Hello world", [15496, 995])


class TokenizerError(UserError):
    """A tokenizer file or directory that cannot be used; the message names it and the fix."""


class Tokenizer(ABC):
    """What the data pipeline, the loader and the checkpoint code need from a tokenizer."""

    kind: str
    vocab_size: int
    eot_id: int
    eot_token: str = EOT_TOKEN
    fingerprint: str
    # The file or directory it was loaded from; None for GPT-2 from the package or tiktoken's download.
    path: str | None = None
    # Threads for encode_batch; the prepare pipeline sets 1 because its tasks are the parallelism.
    num_threads: int = 8

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token text is encoded as ordinary text."""

    @abstractmethod
    def encode_batch(self, texts: Sequence[str], *, sample: bool = False) -> list[list[int]]:
        """`encode` for many texts at once (multi-threaded where the library allows).

        `sample=True` applies the tokenizer's subword sampling (SentencePiece sampling / BPE-dropout)
        when its settings enable it; the other kinds have none and ignore it.
        """

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; `eot_id` decodes to `eot_token`."""

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable identity of this tokenizer, stored in manifests and checkpoints."""
        return {
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "vocab_size": self.vocab_size,
            "eot_id": self.eot_id,
            "eot_token": self.eot_token,
            "path": self.path,
        }

    def describe(self) -> str:
        where = f" from {self.path}" if self.path else ""
        return f"{self.kind}{where} (vocab {self.vocab_size}, fingerprint {self.fingerprint[:12]})"


def _sha256_json(obj: Any, *blobs: bytes) -> str:
    h = hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode())
    for b in blobs:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------- GPT-2 (tiktoken)


class GPT2Tokenizer(Tokenizer):
    """tiktoken's GPT-2 BPE (50257 ids; <|endoftext|> = 50256)."""

    kind = "gpt2"

    def __init__(self, encoding, path: str | None, fingerprint: str | None = None):
        self.encoding = encoding  # the tiktoken.Encoding, used as-is by the HF exporter
        self.path = path
        self.vocab_size = encoding.n_vocab
        self.eot_id = encoding.eot_token
        self.fingerprint = fingerprint or _gpt2_fingerprint(encoding)

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], *, sample: bool = False) -> list[list[int]]:
        if self.num_threads <= 1:
            # tiktoken's batch call always goes through a thread pool; a plain loop is faster on one.
            enc = self.encoding.encode_ordinary
            return [enc(t) for t in texts]
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=self.num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids))


def _gpt2_fingerprint(encoding) -> str:
    # Hash the token bytes id by id (not the file), so the vocabulary file and tiktoken's own
    # download give the same fingerprint: they are the same vocabulary.
    eot = encoding.eot_token
    token_bytes = encoding.decode_single_token_bytes
    blob = bytearray()
    for i in range(encoding.n_vocab):
        if i != eot:
            b = token_bytes(i)
            blob += len(b).to_bytes(2, "little") + b
    settings = {"kind": "gpt2", "pat_str": encoding._pat_str, "special": {EOT_TOKEN: eot}}
    return _sha256_json(settings, bytes(blob))


@functools.lru_cache(maxsize=4)
def _gpt2_encoding_from_file(path: str, mtime_ns: int):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    del mtime_ns  # part of the cache key only: a replaced file is read again
    try:
        ranks = load_tiktoken_bpe(path)
    except Exception as e:  # noqa: BLE001 - any parse failure means "not a tiktoken file"
        raise TokenizerError(
            f"{path}: not a tiktoken vocabulary file ({type(e).__name__}: {e}); "
            "point tokenizer.path (or $GPT_DIST_GPT2_VOCAB) at gpt2.tiktoken"
        ) from None
    enc = tiktoken.Encoding(
        name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={EOT_TOKEN: len(ranks)}
    )
    return enc, _gpt2_fingerprint(enc)


@functools.lru_cache(maxsize=4)
def _sha256_of_file(path: str, mtime_ns: int) -> str:
    del mtime_ns  # part of the cache key only
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _load_gpt2(path: str | None) -> GPT2Tokenizer:
    """tokenizer.path, else $GPT_DIST_GPT2_VOCAB, else the packaged file, else tiktoken's download."""
    source = "tokenizer.path"
    if path is None and os.environ.get(GPT2_VOCAB_ENV):
        path, source = os.environ[GPT2_VOCAB_ENV], f"${GPT2_VOCAB_ENV}"
    if path is not None:
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise TokenizerError(
                f"{source}={path}: no such file; point it at the GPT-2 vocabulary (gpt2.tiktoken), "
                f"or unset it to use the one that ships with gpt_dist"
            )
        enc, fingerprint = _gpt2_encoding_from_file(str(p), p.stat().st_mtime_ns)
        path = str(p)
    elif PACKAGED_GPT2_VOCAB.is_file():
        p = PACKAGED_GPT2_VOCAB
        mtime = p.stat().st_mtime_ns
        got = _sha256_of_file(str(p), mtime)
        if got != GPT2_VOCAB_SHA256:
            raise TokenizerError(
                f"{p}: sha256 {got[:12]}... is not the GPT-2 vocabulary's ({GPT2_VOCAB_SHA256[:12]}...); "
                f"reinstall gpt_dist, or set ${GPT2_VOCAB_ENV} to a good gpt2.tiktoken"
            )
        enc, fingerprint = _gpt2_encoding_from_file(str(p), mtime)
    else:
        import tiktoken

        fingerprint = None
        try:
            enc = tiktoken.get_encoding("gpt2")
        except Exception:  # noqa: BLE001 - no network, no cache: say how to fix it, not urllib's story
            raise TokenizerError(
                f"the GPT-2 vocabulary is missing from this install and could not be downloaded; "
                f"set ${GPT2_VOCAB_ENV} to a gpt2.tiktoken file"
            ) from None
    text, want = _GPT2_CHECK
    got_ids = enc.encode_ordinary(text)
    if got_ids != want or enc.n_vocab != 50257:
        raise TokenizerError(
            f"{path or 'tiktoken gpt2'}: not the GPT-2 vocabulary ({text!r} -> {got_ids}, expected {want}; "
            f"{enc.n_vocab} ids, expected 50257); use tokenizer.kind: bpe or sentencepiece for other vocabularies"
        )
    return GPT2Tokenizer(enc, path, fingerprint)


def portable_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` as written into shard manifests: no path for GPT-2, whose vocabulary every install
    has (the fingerprint identifies it), so a manifest names no file of the machine it was made on."""
    return {**spec, "path": None} if spec.get("kind") == "gpt2" else spec


# ------------------------------------------------------------------------------ SentencePiece


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (BPE or unigram); the end-of-text token is a control symbol."""

    kind = "sentencepiece"

    def __init__(self, model_path: str, settings: dict[str, Any], path: str):
        import sentencepiece as spm

        self.model_path = model_path  # the .model file, used as-is by the HF exporter
        self.path = path
        self.settings = settings
        proto = Path(model_path).read_bytes()
        self.sp = spm.SentencePieceProcessor(model_proto=proto)
        self.vocab_size = self.sp.get_piece_size()
        self.eot_token = settings.get("eot_token", EOT_TOKEN)
        self.eot_id = self.sp.piece_to_id(self.eot_token)
        if self.eot_id == self.sp.unk_id() and self.eot_token != self.sp.id_to_piece(self.sp.unk_id()):
            raise TokenizerError(
                f"{model_path}: has no piece {self.eot_token!r} for end-of-text; train it with "
                f"`gpt-dist train-tokenizer` (which adds it) or set eot_token in {SETTINGS_FILE}"
            )
        sampling = settings.get("sampling") or {}
        self.sampling_alpha = float(sampling.get("alpha", 0.0))
        self.sampling_nbest = int(sampling.get("nbest_size", -1))
        # Sampling changes which segmentation is chosen, not what an id means, so a model trained
        # on sampled shards is compatible with plain encoding: it stays out of the fingerprint.
        self.fingerprint = _sha256_json({"kind": self.kind, "eot_token": self.eot_token}, proto)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: Sequence[str], *, sample: bool = False) -> list[list[int]]:
        if sample and self.sampling_alpha > 0:
            return self.sp.encode(
                list(texts),
                enable_sampling=True,
                alpha=self.sampling_alpha,
                nbest_size=self.sampling_nbest,
                num_threads=self.num_threads,
            )
        return self.sp.encode(list(texts), num_threads=self.num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        # Control symbols decode to "", so split on end-of-text to keep document boundaries visible.
        parts, cur = [], []
        for i in ids:
            if i == self.eot_id:
                parts.append(self.sp.decode(cur))
                cur = []
            else:
                cur.append(int(i))
        parts.append(self.sp.decode(cur))
        return self.eot_token.join(parts)


# ------------------------------------------------------------------------- byte-level BPE (HF)


class ByteBPETokenizer(Tokenizer):
    """A byte-level BPE from the Hugging Face `tokenizers` library (a tokenizer.json)."""

    kind = "bpe"

    def __init__(self, tokenizer_json_path: str, settings: dict[str, Any], path: str):
        from tokenizers import Tokenizer as HFTokenizer

        self.tokenizer_json_path = tokenizer_json_path  # used as-is by the HF exporter
        self.path = path
        self.settings = settings
        text = Path(tokenizer_json_path).read_text(encoding="utf-8")
        try:
            self.tok = HFTokenizer.from_str(text)
        except Exception as e:  # noqa: BLE001 - the library's parse errors vary
            raise TokenizerError(f"{tokenizer_json_path}: not a `tokenizers` JSON file ({e})") from None
        # Special tokens in raw text stay text (see module docstring); user tokens added as
        # non-special (chat markers) are still matched.
        self.tok.encode_special_tokens = True
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.eot_token = settings.get("eot_token", EOT_TOKEN)
        eot = self.tok.token_to_id(self.eot_token)
        if eot is None:
            raise TokenizerError(
                f"{tokenizer_json_path}: has no token {self.eot_token!r} for end-of-text; train it with "
                f"`gpt-dist train-tokenizer` (which adds it) or set eot_token in {SETTINGS_FILE}"
            )
        self.eot_id = eot
        canonical = json.dumps(json.loads(text), sort_keys=True).encode()
        self.fingerprint = _sha256_json({"kind": self.kind, "eot_token": self.eot_token}, canonical)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], *, sample: bool = False) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)


# ------------------------------------------------------------------------------------ loading


def read_settings(directory: Path) -> dict[str, Any]:
    """The `gpt_dist_tokenizer.json` of a trained tokenizer directory."""
    f = directory / SETTINGS_FILE
    if not f.is_file():
        raise TokenizerError(
            f"{directory}: no {SETTINGS_FILE}; tokenizer.path must be a directory written by "
            f"`gpt-dist train-tokenizer` (or the .model / tokenizer.json file itself)"
        )
    try:
        settings = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{f}: not valid JSON ({e}); re-run `gpt-dist train-tokenizer`") from None
    if settings.get("format") != SETTINGS_FORMAT:
        raise TokenizerError(f"{f}: unknown format {settings.get('format')!r}; re-run `gpt-dist train-tokenizer`")
    return settings


def load_tokenizer(cfg: TokenizerConfig) -> Tokenizer:
    """Build the tokenizer described by `cfg` (kind + optional path).

    gpt2: cfg.path (a .tiktoken file), else $GPT_DIST_GPT2_VOCAB, else the packaged file
    (gpt_dist/resources/gpt2.tiktoken, checked by its sha256), else tiktoken's download.
    sentencepiece / bpe: cfg.path is a `train-tokenizer` directory, or the model file itself
    (a .model, or a tokenizer.json that has an "<|endoftext|>" token). kind None is gpt2.
    """
    if cfg.kind in ("gpt2", None):
        return _load_gpt2(cfg.path)
    if cfg.kind not in ("sentencepiece", "bpe"):
        raise TokenizerError(f"tokenizer.kind: unknown kind {cfg.kind!r}; use gpt2, sentencepiece or bpe")
    if not cfg.path:
        raise TokenizerError(
            f"tokenizer.path: required for kind {cfg.kind}; set it to the directory written by "
            f"`gpt-dist train-tokenizer --kind {cfg.kind} ... --output DIR`"
        )
    p = Path(cfg.path).expanduser().resolve()
    if not p.exists():
        raise TokenizerError(f"tokenizer.path={cfg.path}: no such file or directory")
    if p.is_dir():
        settings = read_settings(p)
        if settings.get("kind") != cfg.kind:
            raise TokenizerError(
                f"tokenizer.path={cfg.path} holds a {settings.get('kind')} tokenizer but tokenizer.kind is "
                f"{cfg.kind}; set tokenizer.kind: {settings.get('kind')}"
            )
        model = p / settings["model_file"]
        if not model.is_file():
            raise TokenizerError(f"{p}: {settings['model_file']} is missing; re-run `gpt-dist train-tokenizer`")
    else:
        settings, model = {"eot_token": EOT_TOKEN}, p
    if cfg.kind == "sentencepiece":
        return SentencePieceTokenizer(str(model), settings, str(p))
    return ByteBPETokenizer(str(model), settings, str(p))


def tokenizer_config_from_spec(spec: dict[str, Any]) -> TokenizerConfig:
    """The TokenizerConfig that loads the tokenizer a manifest's spec describes."""
    return TokenizerConfig(kind=spec["kind"], path=spec.get("path"))


def token_dtype(vocab_size: int, requested: str = "auto") -> str:
    """The numpy dtype name for token ids: uint16 when every id fits, else uint32."""
    fits16 = vocab_size <= 2**16
    if requested == "auto":
        return "uint16" if fits16 else "uint32"
    if requested == "uint16" and not fits16:
        raise UserError(
            f"dtype: uint16 holds ids below 65536 but the tokenizer has {vocab_size} ids; "
            f"use dtype: uint32 (or auto)"
        )
    if requested not in ("uint16", "uint32"):
        raise UserError(f"dtype: {requested!r} is not one of auto, uint16, uint32")
    return requested
