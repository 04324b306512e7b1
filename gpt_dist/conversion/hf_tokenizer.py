"""Our tokenizers as Hugging Face fast tokenizers (same ids), and back.

Export writes tokenizer.json, tokenizer_config.json and the chat template, loadable offline by
`AutoTokenizer.from_pretrained` (transformers 4.x and 5.x) as a PreTrainedTokenizerFast:
- gpt2: the byte-level BPE of tiktoken's GPT-2 encoding, its merge list reconstructed from the
  token ranks (transformers' TikTokenConverter), with GPT-2's split pattern;
- bpe: our tokenizers-library JSON, as it is;
- sentencepiece: rebuilt from the .model proto (normalization, pieces and scores, byte fallback).
The saved tokenizer, loaded back with AutoTokenizer, must give our ids on a multilingual probe
text: a tokenizer that would silently differ fails the export (which then leaves no output).

Reading a tokenizer back (a checkpoint's spec, a Hugging Face directory's files) is
gpt_dist.checkpoint.tokenizer_files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpt_dist.errors import CheckpointError

# Checked at every export: English, Chinese, Vietnamese, digits, whitespace runs, an emoji.
PROBE_TEXT = (
    "The quick brown fox's 12,345 jumps -- isn't it?\n\n  Tabs\tand   spaces. "
    "大型语言模型的预训练需要大量数据。你好，世界！ "
    "Xin chào, tôi là người Việt Nam; tiếng Việt có dấu: ắ ằ ẳ ẵ ặ. 🎉"
)


def _backend(tok: Any) -> Any:
    """A `tokenizers.Tokenizer` with the same vocabulary, merges and pre-tokenization as `tok`."""
    if tok.kind == "gpt2":
        from tokenizers import Tokenizer

        # A new object each time (the caller wraps and saves it), from one conversion per process.
        return Tokenizer.from_str(_gpt2_backend_json(tok.fingerprint, tok.encoding))
    if tok.kind == "bpe":
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(tok.tokenizer_json_path))
    if tok.kind == "sentencepiece":
        return _sentencepiece_backend(Path(tok.model_path))
    raise CheckpointError(f"tokenizer kind '{tok.kind}' has no Hugging Face export")


_GPT2_CONVERTED: dict[str, str] = {}  # fingerprint -> tokenizers JSON, converted once per process


def _gpt2_backend_json(fingerprint: str, enc: Any) -> str:
    """tiktoken's GPT-2 `enc` as a `tokenizers` JSON (its merge list rebuilt from the ranks: about
    a second), once per process and fingerprint (the sha256 of the vocabulary and settings)."""
    if fingerprint in _GPT2_CONVERTED:
        return _GPT2_CONVERTED[fingerprint]
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _FromEncoding(TikTokenConverter):
        # TikTokenConverter reads a .tiktoken file; ranks come from the live encoding instead
        # (token bytes -> id via tiktoken's public API), so any GPT-2 source works.
        def load_tiktoken_bpe(self, _url: Any) -> dict[bytes, int]:
            return {b: enc.encode_single_token(b) for b in enc.token_byte_values()}

    _GPT2_CONVERTED[fingerprint] = _FromEncoding(
        vocab_file=None, pattern=enc._pat_str, extra_special_tokens=sorted(enc.special_tokens_set)
    ).converted().to_str()
    return _GPT2_CONVERTED[fingerprint]


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
