"""The tokenizer that goes with a checkpoint: the spec recorded in gpt_dist.json, or the
tokenizer files saved in a Hugging Face directory, as our tokenizer (gpt_dist.data.tokenizer).

A Hugging Face directory with the GPT-2 vocabulary is recognised as kind gpt2; any other
tokenizer.json is kept as a `bpe` tokenizer. Writing tokenizers for Hugging Face is
gpt_dist.conversion.hf_tokenizer.
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
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")



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
