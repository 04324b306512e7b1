"""Our datatrove steps for the cleaning stage, where datatrove has none that fits.

- NFCFormatter: unicode NFC when ftfy is switched off (datatrove's FTFYFormatter does NFC itself).
- LanguageFilter: py3langid, whose model ships inside the package. datatrove's LanguageFilter
  downloads a fastText model at run time, which machines without internet cannot do.
- WordListFilter: drops documents with too many words from a list (profanity, boilerplate, ...).
- LanguageScoped: applies an English-centric heuristic filter (Gopher, C4, FineWeb) only to
  documents whose detected language is listed, and passes the others through untouched.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.formatters.base import BaseFormatter

from gpt_dist.errors import DataError


class NFCFormatter(BaseFormatter):
    name = "NFC"

    def format(self, text: str) -> str:
        return unicodedata.normalize("NFC", text)


class LanguageFilter(BaseFilter):
    """Keep documents whose language (py3langid, normalised probability) is in `keep`.

    Sets doc.metadata["language"] and ["language_score"]; drop reasons are `lang_<code>` (another
    language) and `lang_low_score` (a kept language, below `min_score`). Only the first
    `max_chars` characters are classified: language is a property of the whole text, and
    py3langid walks text byte by byte in Python.
    """

    name = "language (py3langid)"

    def __init__(self, keep: list[str], min_score: float = 0.5, max_chars: int = 2000):
        super().__init__()
        self.keep = set(keep)
        self.min_score = min_score
        self.max_chars = max_chars
        self._identifier = None
        unknown = self.keep - set(_identifier().labels)
        if unknown:
            raise DataError(
                f"language.keep: {', '.join(sorted(unknown))} not known to py3langid; "
                f"use ISO 639-1 codes such as en, vi, zh"
            )

    def classify(self, text: str) -> tuple[str, float]:
        if self._identifier is None:
            self._identifier = _identifier()
        lang, score = self._identifier.classify(text[: self.max_chars])
        return lang, float(score)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lang, score = self.classify(doc.text)
        doc.metadata["language"] = lang
        doc.metadata["language_score"] = round(score, 4)
        if lang not in self.keep:
            return False, f"lang_{lang}"
        if score < self.min_score:
            return False, "lang_low_score"
        return True


@functools.lru_cache(maxsize=1)
def _identifier():
    # Loading unpacks an xz-compressed model (about a second): once per process.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


# Scripts written without spaces (kana, CJK ideographs, Hangul): each character counts as a word.
CJK_CHARS = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
WORD_RE = re.compile(rf"[{CJK_CHARS}]|[^\s{CJK_CHARS}]+")


def split_words(text: str) -> list[str]:
    """Whitespace-separated words, and single characters of scripts written without spaces."""
    return WORD_RE.findall(text)


class WordListFilter(BaseFilter):
    """Drop documents in which more than `max_ratio` of the words are on a list.

    Words are matched case-insensitively as whole words; a CJK entry matches as a substring
    (those scripts have no spaces). `max_ratio=0` drops a document on the first match.
    """

    def __init__(self, words: list[str], max_ratio: float = 0.0, name: str = "wordlist"):
        self.name = f"word list ({name})"
        super().__init__()
        self.reason = name
        self.max_ratio = max_ratio
        words = sorted({w.strip().lower() for w in words if w.strip()})
        if not words:
            raise DataError(f"wordlist ({name}): the word list is empty; give words: or files:")
        cjk = [w for w in words if re.search(rf"[{CJK_CHARS}]", w)]
        latin = [w for w in words if w not in cjk]
        parts = []
        if latin:
            parts.append(r"(?<!\w)(?:" + "|".join(map(re.escape, latin)) + r")(?!\w)")
        if cjk:
            parts.append("|".join(map(re.escape, cjk)))
        self.pattern = re.compile("|".join(parts))

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text.lower()
        hits = len(self.pattern.findall(text))
        if hits == 0:
            return True
        n_words = max(1, len(split_words(text)))
        if hits / n_words > self.max_ratio:
            return False, self.reason
        return True


def read_word_files(files: list[str], key: str = "wordlist.files") -> list[str]:
    """Words from text files, one per line ('#' starts a comment)."""
    words = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise DataError(f"{key}: {f}: no such file; give a text file with one word per line")
        for line in p.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                words.append(line)
    return words


class LanguageScoped(BaseFilter):
    """Run `inner` only on documents whose detected language is in `languages`.

    Gopher/C4/FineWeb rules count words split by spaces and English stop words: applied to
    Chinese they would drop nearly everything. The language comes from LanguageFilter (or
    `default_language` when that step is off).
    """

    def __init__(self, inner: BaseFilter, languages: list[str], default_language: str = "en"):
        self.name = f"{inner.name} [{','.join(languages)}]"
        super().__init__()
        self.inner = inner
        self.languages = set(languages)
        self.default_language = default_language

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("language", self.default_language) not in self.languages:
            return True
        return self.inner.filter(doc)
