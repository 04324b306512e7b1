"""Our tokenizers as Hugging Face fast tokenizers (same ids), and back.

Export writes tokenizer.json, tokenizer_config.json and the chat template, loadable offline by
`AutoTokenizer.from_pretrained` (transformers 4.x and 5.x) as a PreTrainedTokenizerFast:
- gpt2: the byte-level BPE of tiktoken's GPT-2 encoding, its merge list reconstructed from the
  token ranks (transformers' TikTokenConverter), with GPT-2's split pattern;
- bpe: our tokenizers-library JSON, as it is;
- sentencepiece: rebuilt from the .model proto (normalization, pieces and scores, byte fallback).
The saved tokenizer, loaded back with AutoTokenizer, must give our ids on a multilingual probe
text: a tokenizer that would silently differ fails the export (which then leaves no output).

Import recognises the GPT-2 vocabulary in a Hugging Face directory (kind gpt2); any other
tokenizer.json is kept as a `bpe` tokenizer.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from gpt_dist.errors import CheckpointError

log = logging.getLogger(__name__)

GPT2_EOT = "<|endoftext|>"
# Checked at every export: English, Chinese, Vietnamese, digits, whitespace runs, an emoji.
PROBE_TEXT = (
    "The quick brown fox's 12,345 jumps -- isn't it?\n\n  Tabs\tand   spaces. "
    "大型语言模型的预训练需要大量数据。你好，世界！ "
    "Xin chào, tôi là người Việt Nam; tiếng Việt có dấu: ắ ằ ẳ ẵ ặ. 🎉"
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


# ----------------------------------------------------------------------------- ours


def load_our_tokenizer(spec: dict[str, Any] | None, meta_file: Path) -> Any:
    """Our tokenizer (gpt_dist.data.tokenizer) for a metadata `tokenizer` spec (kind, path, ...)."""
    from gpt_dist.config import TokenizerConfig
    from gpt_dist.data.tokenizer import load_tokenizer
    from gpt_dist.errors import UserError

    if not isinstance(spec, dict) or "kind" not in spec:
        raise CheckpointError(
            f"{meta_file}: tokenizer is missing; the export needs the tokenizer the model was trained with "
            "(a gpt_dist.json from a training run records it)"
        )
    path = spec.get("path")
    if spec["kind"] == "gpt2" and path and not Path(path).exists():
        # The vocabulary file of the training machine; GPT-2's is the same everywhere
        # ($GPT_DIST_GPT2_VOCAB or tiktoken's), and the fingerprint below proves it.
        path = None
    try:
        tok = load_tokenizer(TokenizerConfig(kind=spec["kind"], path=path))
    except UserError as e:
        raise CheckpointError(f"{meta_file}: tokenizer {spec.get('kind')} at {spec.get('path')}: {e}") from None
    want = spec.get("fingerprint")
    if want and want != tok.fingerprint:
        raise CheckpointError(
            f"{meta_file}: tokenizer fingerprint {want[:12]}... but {tok.describe()} loads now; the tokenizer "
            "files changed since training; restore them (the exported ids would not be the model's)"
        )
    return tok


# ----------------------------------------------------------------------------- export


def _backend(tok: Any) -> Any:
    """A `tokenizers.Tokenizer` with the same vocabulary, merges and pre-tokenization as `tok`."""
    if tok.kind == "gpt2":
        from transformers.convert_slow_tokenizer import TikTokenConverter

        enc = tok.encoding

        class _FromEncoding(TikTokenConverter):
            # TikTokenConverter reads a .tiktoken file; ranks come from the live encoding instead
            # (token bytes -> id via tiktoken's public API), so any GPT-2 source works.
            def load_tiktoken_bpe(self, _url: Any) -> dict[bytes, int]:
                return {b: enc.encode_single_token(b) for b in enc.token_byte_values()}

        return _FromEncoding(
            vocab_file=None, pattern=enc._pat_str, extra_special_tokens=sorted(enc.special_tokens_set)
        ).converted()
    if tok.kind == "bpe":
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(tok.tokenizer_json_path))
    if tok.kind == "sentencepiece":
        return _sentencepiece_backend(Path(tok.model_path))
    raise CheckpointError(f"tokenizer kind '{tok.kind}' has no Hugging Face export")


def _sentencepiece_backend(model_path: Path) -> Any:
    """A SentencePiece BPE or unigram model as a `tokenizers.Tokenizer` with the same ids.

    SentencePiece's encoding is rebuilt from its model proto: the normalization (the compiled
    NFKC-style charsmap, then extra spaces removed, the "▁" dummy prefix, spaces escaped as "▁"),
    the same pieces and scores (BPE merges ordered by score), and byte fallback.
    """
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE, Unigram
    from transformers.tokenization_utils_base import generate_merges

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_path.read_bytes())
    ts, ns = proto.trainer_spec, proto.normalizer_spec
    if ts.treat_whitespace_as_suffix:
        raise CheckpointError(f"{model_path}: treat_whitespace_as_suffix has no Hugging Face equivalent here")
    normal, control, user_defined = 1, 3, 4  # SentencePiece piece types
    scores = [(p.piece, p.score) for p in proto.pieces]
    if ts.model_type == ts.UNIGRAM:
        model = Unigram(scores, unk_id=ts.unk_id, byte_fallback=ts.byte_fallback)
    elif ts.model_type == ts.BPE:
        vocab = {piece: i for i, (piece, _) in enumerate(scores)}
        # SentencePiece merges the adjacent pair whose union has the highest score; only
        # ordinary pieces take part (not control, byte or user-defined ones).
        merges = generate_merges(vocab, dict(scores), skip_tokens={p.piece for p in proto.pieces if p.type != normal})
        model = BPE(vocab, merges, unk_token=ts.unk_piece, fuse_unk=True, byte_fallback=ts.byte_fallback)
    else:
        raise CheckpointError(f"{model_path}: SentencePiece model type {ts.model_type} has no Hugging Face export")
    backend = Tokenizer(model)
    steps = [normalizers.Precompiled(ns.precompiled_charsmap)] if ns.precompiled_charsmap else []
    if ns.remove_extra_whitespaces:  # spaces only (\A, \z: Oniguruma's ^ and $ match at every line)
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if ns.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    if ns.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    backend.normalizer = normalizers.Sequence(steps)
    dec = [decoders.Replace("▁", " ")] + ([decoders.ByteFallback()] if ts.byte_fallback else []) + [decoders.Fuse()]
    if ns.add_dummy_prefix:
        dec.append(decoders.Strip(" ", 1, 0))
    backend.decoder = decoders.Sequence(dec)
    backend.add_tokens(
        [
            AddedToken(p.piece, normalized=False, special=p.type == control)
            for p in proto.pieces
            if p.type in (control, user_defined)
        ]
    )
    return backend


def save_hf_tokenizer(tok: Any, out_dir: Path, *, chat_template: str | None, model_max_length: int) -> None:
    """Write `tok` as a Hugging Face fast tokenizer into `out_dir`, after checking its ids."""
    from transformers import PreTrainedTokenizerFast

    backend = _backend(tok)
    eot = backend.id_to_token(tok.eot_id)
    if eot is None:
        raise CheckpointError(
            f"tokenizer {tok.describe()}: end-of-text id {tok.eot_id} is not in the converted vocabulary"
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=eot, eos_token=eot, model_max_length=model_max_length
    )
    fast.chat_template = chat_template
    fast.save_pretrained(str(out_dir))
    # transformers 5 records its own class name; the generic one loads in 4.x and 5.x alike.
    config_file = out_dir / "tokenizer_config.json"
    conf = json.loads(config_file.read_text(encoding="utf-8"))
    conf["tokenizer_class"] = "PreTrainedTokenizerFast"
    conf.pop("backend", None)
    if chat_template:
        conf["chat_template"] = chat_template  # readers older than chat_template.jinja look here
    config_file.write_text(json.dumps(conf, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _check_ids(tok, out_dir)


def _check_ids(tok: Any, out_dir: Path) -> None:
    """The saved tokenizer, loaded as users load it, must give our ids on the probe text."""
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(out_dir))
    # The default call (add_special_tokens=True) is what users run: it must add nothing we did
    # not train with. verbose=False: the probe may be longer than model_max_length.
    ours, theirs = tok.encode(PROBE_TEXT), loaded(PROBE_TEXT, verbose=False)["input_ids"]
    if ours != theirs or loaded.convert_tokens_to_ids(loaded.eos_token) != tok.eot_id:
        pairs = enumerate(zip(ours, theirs, strict=False))
        first = next((i for i, (a, b) in pairs if a != b), min(len(ours), len(theirs)))
        raise CheckpointError(
            f"tokenizer {tok.describe()}: the Hugging Face conversion gives different ids from token {first} of "
            f"a probe text (ours {ours[first : first + 5]}, converted {theirs[first : first + 5]}; end-of-text "
            f"{tok.eot_id} vs {loaded.convert_tokens_to_ids(loaded.eos_token)}); it cannot be exported faithfully"
        )


# ----------------------------------------------------------------------------- import


def chat_template_of(hf_dir: Path) -> str | None:
    """The chat template saved with a Hugging Face tokenizer, if any."""
    jinja = hf_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    tmpl = (_read_json(hf_dir / "tokenizer_config.json") or {}).get("chat_template")
    if isinstance(tmpl, list):  # named templates: [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in tmpl if isinstance(t, dict)}
        tmpl = named.get("default") or next(iter(named.values()), None)
    return tmpl if isinstance(tmpl, str) else None


def tokenizer_spec_of(hf_dir: Path, copy_to: Path | None = None) -> dict[str, Any] | None:
    """Our tokenizer spec for the tokenizer saved in `hf_dir`.

    GPT-2's vocabulary -> kind gpt2. Any other tokenizer.json, when `copy_to` is given, is
    copied there as a `bpe` tokenizer directory (its eos token as end-of-text) -> kind bpe
    with path `copy_to`. None (logged) when there is no tokenizer, or without `copy_to`.
    """
    from gpt_dist.data.tokenizer import SETTINGS_FILE, SETTINGS_FORMAT

    vocab = _hf_vocab(hf_dir)
    if vocab is None:
        log.warning("%s: no tokenizer (tokenizer.json or vocab.json); none is recorded", hf_dir)
        return None
    if _is_gpt2_vocab(vocab):
        return load_our_tokenizer({"kind": "gpt2", "path": None}, hf_dir / "tokenizer.json").spec()
    if not (hf_dir / "tokenizer.json").is_file():
        log.warning("%s: a tokenizer other than GPT-2's without tokenizer.json; none is recorded", hf_dir)
        return None
    if copy_to is None:
        log.info("%s: its tokenizer is not GPT-2's; `gpt-dist convert from-hf` keeps it as a bpe tokenizer", hf_dir)
        return None
    copy_to.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (hf_dir / name).is_file():
            shutil.copy2(hf_dir / name, copy_to / name)
    settings = {
        "format": SETTINGS_FORMAT,
        "kind": "bpe",
        "model_file": "tokenizer.json",
        "eot_token": _eos_token(hf_dir),
    }
    (copy_to / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return load_our_tokenizer({"kind": "bpe", "path": str(copy_to)}, hf_dir / "tokenizer.json").spec()


def _eos_token(hf_dir: Path) -> str:
    eos = (_read_json(hf_dir / "tokenizer_config.json") or {}).get("eos_token")
    if isinstance(eos, dict):  # an AddedToken written out
        eos = eos.get("content")
    return eos if isinstance(eos, str) and eos else GPT2_EOT


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); copy the model directory again") from None


def _hf_vocab(hf_dir: Path) -> dict[str, int] | None:
    """token string -> id, added tokens included, from tokenizer.json or the slow vocab.json."""
    tj = _read_json(hf_dir / "tokenizer.json")
    if tj is not None:
        vocab = (tj.get("model") or {}).get("vocab") or {}
        if isinstance(vocab, list):  # Unigram: [[piece, score], ...] in id order
            vocab = {piece: i for i, (piece, _score) in enumerate(vocab)}
        vocab = dict(vocab)
        for added in tj.get("added_tokens") or []:
            vocab[added["content"]] = added["id"]
        return vocab
    return _read_json(hf_dir / "vocab.json")


def _is_gpt2_vocab(vocab: dict[str, int]) -> bool:
    """Whether `vocab` (HF byte-level strings -> ids) is exactly tiktoken's GPT-2 vocabulary."""
    if vocab.get(GPT2_EOT) != 50256 or len(vocab) != 50257:
        return False
    try:
        tok = load_our_tokenizer({"kind": "gpt2", "path": None}, Path("tokenizer.kind=gpt2"))
    except CheckpointError as e:  # no vocabulary file and no network: cannot tell
        log.warning("cannot load the GPT-2 vocabulary to compare with (%s); treating the tokenizer as another one", e)
        return False
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = bytes_to_unicode()
    enc = tok.encoding
    return all(
        vocab.get("".join(byte_chars[x] for x in b)) == enc.encode_single_token(b) for b in enc.token_byte_values()
    )
