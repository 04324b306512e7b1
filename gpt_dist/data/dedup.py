"""Exact and near-duplicate removal, on datatrove's dedup stages.

Exact: datatrove's ExactDedupSignature / ExactFindDedups / ExactDedupFilter over a 64-bit
xxhash of the normalised text (NFC from the cleaning stage, whitespace runs collapsed).

Near: datatrove's four MinHash-LSH stages (signature, buckets, cluster, filter). Two changes:
- shingles are word n-grams where a "word" is a whitespace-separated run or, in scripts written
  without spaces (Chinese, Japanese, Korean), a single character. datatrove's default splits
  with spaCy per language, which for zh / vi needs jieba / pyvi, and one corpus here mixes
  languages anyway;
- `lsh_params` turns a similarity threshold into (bands, rows), so the config can speak in
  thresholds. A pair of documents with Jaccard similarity s becomes a candidate with probability
  1 - (1 - s^rows)^bands; every candidate pair is treated as a duplicate (no verification pass).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupFilter
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupFilter, MinhashDedupSignature
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import simplify_text
from datatrove.utils.word_tokenizers import WordTokenizer

from gpt_dist.data.filters import split_words

_WS = re.compile(r"\s+")


def exact_dedup_key(doc: Document) -> bytes:
    """The text two documents must share to count as exact duplicates (UTF-8 bytes: xxhash takes bytes)."""
    return _WS.sub(" ", doc.text).strip().encode("utf-8", "surrogatepass")


def exact_dedup_config() -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=exact_dedup_key, hash_config=HashConfig(precision=64))


class ExactDedup(ExactDedupFilter):
    """datatrove's exact-dedup filter stage, under the name the manifest's statistics use."""

    name = "exact dedup"


class MinhashDedup(MinhashDedupFilter):
    """datatrove's MinHash filter stage, under the name the manifest's statistics use."""

    name = "MinHash dedup"


class ScriptWordTokenizer(WordTokenizer):
    """Whitespace words, and single characters in CJK scripts; no model, no per-language setup."""

    def word_tokenize(self, text: str) -> list[str]:
        return split_words(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s for s in re.split(r"(?<=[.!?。！？])\s*", text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in re.finditer(r"[^.!?。！？]+[.!?。！？]*", text)]


class MinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash signature stage with our shingles: script-aware words (see the module
    docstring), each n-gram hashed as UTF-8 bytes with 64-bit xxhash."""

    name = "MinHash signatures"

    def __init__(self, output_folder: str, config: MinhashConfig):
        super().__init__(output_folder, config=config, language="en")
        self.word_tokenizer = ScriptWordTokenizer()
        # Stripping diacritics walks the text character by character in Python, and ASCII text
        # has none: skipping it there gives the same shingles at about twice the speed.
        self._ascii_norm = dataclasses.replace(config.norm_config, norm_unicode_diacritics=False)

    def get_shingles(self, text: str) -> np.ndarray:
        """Hashed word n-grams of the simplified text, (n_shingles, 1) uint64 (empty when too short)."""
        import xxhash

        norm = self._ascii_norm if text.isascii() else self.config.norm_config
        words = self.word_tokenizer.word_tokenize(simplify_text(text, norm))
        n = self.config.n_grams
        count = len(words) - n + 1
        if count <= 0:
            return np.empty((0, 1), dtype=np.uint64)
        h = xxhash.xxh64_intdigest
        return np.fromiter((h(" ".join(words[i:i + n]).encode("utf-8", "surrogatepass")) for i in range(count)),
                           dtype=np.uint64, count=count).reshape(-1, 1)


def minhash_config(ngram: int, bands: int, rows: int, seed: int) -> MinhashConfig:
    return MinhashConfig(n_grams=ngram, num_buckets=bands, hashes_per_bucket=rows, seed=seed,
                         hash_config=HashConfig(precision=64))


def candidate_probability(similarity: float | np.ndarray, bands: int, rows: int):
    """Probability that two documents with this Jaccard similarity share at least one LSH bucket."""
    return 1.0 - (1.0 - np.asarray(similarity) ** rows) ** bands


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm that best separate pairs around `threshold`.

    Minimises the equally weighted false-positive area (similarity below the threshold but
    candidate) plus false-negative area (above it but not candidate), as datasketch does.
    """
    s_lo = np.linspace(0.0, threshold, 201)
    s_hi = np.linspace(threshold, 1.0, 201)
    best, best_err = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(candidate_probability(s_lo, bands, rows), s_lo)
            fn = np.trapezoid(1.0 - candidate_probability(s_hi, bands, rows), s_hi)
            if fp + fn < best_err:
                best, best_err = (bands, rows), fp + fn
    return best


def effective_threshold(bands: int, rows: int) -> float:
    """The similarity where the candidate probability rises steepest: about (1/bands)^(1/rows)."""
    return float((1.0 / bands) ** (1.0 / rows))
