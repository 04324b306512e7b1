"""The tokenizer of a run that trains on tokenized shards (pretrain, CPT): the one their manifests name.

    tok = shards_tokenizer(cfg)      # cfg.data.train / cfg.data.val: shard set directories

The shards already hold token ids, so the tokenizer a run on them can use is fixed: the one
`gpt-dist prepare` recorded in each manifest (kind, vocabulary size, end-of-text id, fingerprint
and, for sentencepiece / bpe, the `train-tokenizer` directory). A run config with no `tokenizer:`
section takes it from there. One that names a tokenizer must name that one: another kind, or a
`tokenizer.path` whose fingerprint differs, stops the run with the fix, since training on ids
made by one tokenizer and saving the other with the checkpoint would export a model whose ids
mean other words. `tokenizer.path` of the same kind is how a tokenizer directory that moved
since `prepare` is found again. GPT-2's vocabulary is the same on every install (the packaged
file, checked by its sha256), so nothing has to be set for it.

The tokenizer is loaded (not only its spec) because the run records it with every checkpoint,
where the exporter and generate read it, and in-loop evaluators encode text with it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gpt_dist.config import Config, TokenizerConfig
from gpt_dist.data.shards import MANIFEST, read_manifest
from gpt_dist.data.tokenizer import Tokenizer, load_tokenizer
from gpt_dist.errors import DataError, UserError

log = logging.getLogger(__name__)


def shards_tokenizer(cfg: Config) -> Tokenizer:
    """The tokenizer the manifests of cfg.data.train (and cfg.data.val) name, checked against
    `cfg.tokenizer` when that names one. DataError / UserError naming the manifest and the fix."""
    sources = [(f"data.train[{i}]", s.path) for i, s in enumerate(cfg.data.train)]
    if cfg.data.val:
        sources.append(("data.val", cfg.data.val))
    if not sources:
        raise UserError("data.train: no shard sets; list them, e.g. data.train: [{path: data/sample/train}]")
    specs = [(key, path, read_manifest(path, key=f"{key}.path" if key != "data.val" else key).tokenizer)
             for key, path in sources]
    key, path, spec = specs[0]
    for other_key, other_path, other in specs[1:]:
        if other.get("fingerprint") != spec.get("fingerprint"):
            raise DataError(
                f"{other_key}: {other_path} was made with tokenizer {_named(other)} but {key} ({path}) with "
                f"{_named(spec)}; re-run `gpt-dist prepare` for one of them with the other's tokenizer"
            )
    manifest = Path(path) / MANIFEST
    tok = _load(spec, cfg.tokenizer, manifest)
    origin = "the run config's tokenizer.path, which" if cfg.tokenizer.path else "it"
    log.info("tokenizer: %s, from %s (%s matches the shards' fingerprint)", tok.describe(), manifest, origin)
    return tok


def _named(spec: dict[str, Any]) -> str:
    return f"{spec.get('kind')} (fingerprint {str(spec.get('fingerprint'))[:12]})"


def _load(spec: dict[str, Any], configured: TokenizerConfig, manifest: Path) -> Tokenizer:
    kind = spec.get("kind")
    if not kind or not spec.get("fingerprint"):
        raise DataError(f"{manifest}: no tokenizer recorded (kind and fingerprint); rebuild with `gpt-dist prepare`")
    if configured.kind is not None and configured.kind != kind:
        raise UserError(
            f"tokenizer.kind: {configured.kind}, but the shards were made with a {kind} tokenizer ({manifest}); "
            f"delete the run config's tokenizer: section (training on shards takes the manifest's tokenizer), "
            f"or re-run `gpt-dist prepare` with tokenizer.kind: {configured.kind}"
        )
    if configured.path:
        path = configured.path
    elif kind == "gpt2":
        path = None  # every install has GPT-2's vocabulary; the fingerprint below proves it is the same
    else:
        path = spec.get("path")
        if not path or not Path(path).exists():
            raise UserError(
                f"{manifest}: tokenizer.path {path} (the {kind} tokenizer the shards were made with) does not exist "
                f"on this machine; set tokenizer.path in the run config to where that `gpt-dist train-tokenizer` "
                f"directory is now"
            )
    tok = load_tokenizer(TokenizerConfig(kind=kind, path=path))
    if tok.fingerprint != spec["fingerprint"]:
        where = f"tokenizer.path={configured.path}" if configured.path else f"{kind} at {path or 'the packaged vocabulary'}"
        raise UserError(
            f"{where} is {tok.describe()}, but the shards were made with fingerprint {spec['fingerprint'][:12]} "
            f"({manifest}); point tokenizer.path at the tokenizer `gpt-dist prepare` used (or delete it to take "
            f"the manifest's), or re-run `gpt-dist prepare` with this tokenizer"
        )
    return tok
