import random

import numpy as np
from datatrove.data import Document
from datatrove.utils.text import simplify_text

from gpt_dist.data.dedup import (
    MinhashSignature,
    candidate_probability,
    effective_threshold,
    exact_dedup_key,
    lsh_params,
    minhash_config,
)

from data_helpers import LANG_TEXTS, english_doc


def test_lsh_geometry_follows_the_threshold():
    for threshold in (0.6, 0.8, 0.9):
        bands, rows = lsh_params(threshold, 112)
        assert bands * rows <= 112
        assert abs(effective_threshold(bands, rows) - threshold) < 0.08
        assert candidate_probability((1 + threshold) / 2, bands, rows) > 0.85
        assert candidate_probability(threshold - 0.3, bands, rows) < 0.01
    assert lsh_params(0.9, 112)[1] > lsh_params(0.6, 112)[1]  # stricter: more rows per band


def test_exact_key_ignores_only_whitespace_differences():
    a = Document(text="Hello  world\n\nagain ", id="a")
    assert exact_dedup_key(a) == exact_dedup_key(Document(text="Hello world again", id="b"))
    assert exact_dedup_key(a) != exact_dedup_key(Document(text="hello world again", id="c"))


def test_shingles_split_cjk_into_characters_and_match_for_near_copies(tmp_path):
    sig = MinhashSignature(str(tmp_path), minhash_config(ngram=2, bands=14, rows=8, seed=1))
    assert sig.word_tokenizer.word_tokenize("北京是 the capital") == ["北", "京", "是", "the", "capital"]
    assert sig.get_shingles("北京").shape == (1, 1) and sig.get_shingles("北").shape == (0, 1)
    # The ASCII shortcut gives the very shingles the full normalisation would.
    text = english_doc(random.Random(0), 60)
    assert simplify_text(text, sig._ascii_norm) == simplify_text(text, sig.config.norm_config)
    a = sig.get_signature(sig.get_shingles(LANG_TEXTS["zh"] * 3))
    b = sig.get_signature(sig.get_shingles(LANG_TEXTS["zh"] * 3 + "。新"))
    c = sig.get_signature(sig.get_shingles(LANG_TEXTS["vi"] * 3))
    assert sum(x == y for x, y in zip(a, b)) >= 10  # most bands agree for a near copy
    assert sum(x == y for x, y in zip(a, c)) == 0
    assert np.array(a).shape == (14, 8)
