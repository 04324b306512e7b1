"""Helpers of the data tests: tiny corpora, running the CLI in a folder, synthetic shard sets."""

from __future__ import annotations

import json
import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from gpt_dist.cli import main as cli_main
from gpt_dist.config import Config, load_config
from gpt_dist.data.shards import Manifest, ShardWriter, write_manifest

# A few sentences per language, clear enough for py3langid (checked in test_filters.py).
LANG_TEXTS = {
    "en": "The committee published its annual report on Tuesday, describing how the new library helped "
          "students find the books they needed for their research.",
    "vi": "Thành phố Hà Nội là thủ đô của nước Cộng hòa Xã hội chủ nghĩa Việt Nam, nằm ở trung tâm đồng bằng "
          "sông Hồng với lịch sử hơn một nghìn năm.",
    "zh": "北京是中华人民共和国的首都，也是全国的政治、文化和国际交往中心，拥有三千多年的建城史。",
    "de": "Die Bundesregierung hat am Dienstag einen neuen Gesetzentwurf vorgelegt, der den Ausbau der "
          "erneuerbaren Energien beschleunigen soll.",
    "fr": "Le gouvernement a présenté mardi un nouveau projet de loi visant à accélérer le développement des "
          "énergies renouvelables dans le pays.",
    "es": "El gobierno presentó el martes un nuevo proyecto de ley para acelerar el desarrollo de las energías "
          "renovables en todo el país.",
    "ru": "Правительство во вторник представило новый законопроект, направленный на ускорение развития "
          "возобновляемых источников энергии.",
    "ja": "政府は火曜日、再生可能エネルギーの開発を加速させるための新しい法案を発表しました。",
}

_WORDS = ("time year people way day man thing woman life child world school state family student group country "
          "problem hand part place case week company system program question work government number night point "
          "home water room mother area money story fact month lot right study book eye job word business issue "
          "side kind head house service friend father power hour game line end member law car city community name "
          "president team minute idea kid body information back parent face others level office door health "
          "person art war history party result change morning reason research girl guy moment air teacher force "
          "education").split()


def english_doc(rng: random.Random, n_words: int = 120) -> str:
    """Random English-looking prose that passes Gopher's rules; distinct documents share almost no 5-grams."""
    sentences, words = [], 0
    while words < n_words:
        k = rng.randint(8, 16)
        body = [rng.choice(_STOP) if rng.random() < 0.3 else rng.choice(_WORDS) for _ in range(k)]
        sentences.append(" ".join(["The"] + body) + ".")
        words += k + 1
    return " ".join(sentences)


_STOP = ["the", "of", "and", "to", "with", "that", "have", "be"]


@contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_cli(*args: str, cwd: Path) -> int:
    """Run `gpt-dist ARGS...` in-process from `cwd`, as a user would from a shell."""
    with chdir(cwd):
        return cli_main(list(args))


def write_jsonl(path: Path, records: list, compress: str | None = None) -> Path:
    lines = b"".join((r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n"
                     for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress == "gzip":
        import gzip

        path.write_bytes(gzip.compress(lines))
    elif compress == "zstd":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(lines))
    else:
        path.write_bytes(lines)
    return path


FAKE_TOKENIZER = {"kind": "gpt2", "fingerprint": "f" * 64, "vocab_size": 50257, "eot_id": 50256,
                  "eot_token": "<|endoftext|>", "path": None}


def make_shard_set(directory: Path, samples: np.ndarray, *, per_shard: int, dtype: str = "uint16",
                   tokenizer: dict | None = None) -> Path:
    """A shard set of the given (n, seq_len + 1) samples, written by the real writer."""
    seq_len = samples.shape[1] - 1
    w = ShardWriter(directory, "train-t00000-", seq_len, dtype, per_shard)
    w.write(samples)
    m = Manifest(split="train", seq_len=seq_len, dtype=dtype, tokenizer=tokenizer or FAKE_TOKENIZER,
                 shards=w.close())
    write_manifest(directory, m)
    return directory


def numbered_samples(n: int, seq_len: int, source: int) -> np.ndarray:
    """Samples whose tokens identify them: [source, id // 1000, id % 1000, ...]."""
    s = np.zeros((n, seq_len + 1), dtype=np.int64)
    s[:, 0] = source
    s[:, 1] = np.arange(n) // 1000
    s[:, 2] = np.arange(n) % 1000
    s[:, 3:] = (np.arange(n)[:, None] + np.arange(seq_len - 2)[None, :]) % 50000
    return s


def sample_ids(batch_input_ids) -> list[tuple[int, int]]:
    """(source, sample id) of each row of a batch built from numbered_samples."""
    a = batch_input_ids.numpy()
    return [(int(r[0]), int(r[1]) * 1000 + int(r[2])) for r in a]


def loader_config(train: list[tuple[Path, float]], *, val: Path | None = None, seq_len: int = 16, batch: int = 2,
                  workers: int = 0, seed: int = 1234, window: int = 2, extra: list[str] = ()) -> Config:
    sources = ", ".join(f"{{path: '{p}', weight: {w}}}" for p, w in train)
    overrides = [
        "model.preset=tiny", f"train.seq_len={seq_len}", f"train.micro_batch_size={batch}",
        f"train.global_batch_tokens={batch * seq_len * 4}", f"train.seed={seed}",
        f"data.train=[{sources}]", f"data.num_workers={workers}", f"data.shuffle_window={window}",
        "eval.batches=3", *extra,
    ]
    if val is not None:
        overrides.append(f"data.val='{val}'")
    return load_config([], overrides)


def split_tokens(split_dir: Path) -> np.ndarray:
    """Every stored token of a shard set, shards in manifest order (the packed stream of a 1-task run)."""
    from gpt_dist.data.shards import read_manifest, read_tokens

    m = read_manifest(split_dir)
    return np.concatenate([read_tokens(split_dir / s.name, s, m.seq_len, m.dtype).reshape(-1) for s in m.shards])


def decoded_documents(split_dir: Path) -> list[str]:
    """The documents of a 1-task shard set, decoded; the last (cut) one is left out."""
    from gpt_dist.data.shards import read_manifest
    from gpt_dist.data.tokenizer import load_tokenizer, tokenizer_config_from_spec

    tok = load_tokenizer(tokenizer_config_from_spec(read_manifest(split_dir).tokenizer))
    return tok.decode(split_tokens(split_dir).tolist()).split(tok.eot_token)[:-1]


def shard_hashes(split_dir: Path) -> dict[str, str]:
    from gpt_dist.data.shards import read_manifest

    return {s.name: s.sha256 for s in read_manifest(split_dir).shards}
