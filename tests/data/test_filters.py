import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter

from gpt_dist.data.filters import LanguageFilter, LanguageScoped, WordListFilter
from gpt_dist.errors import DataError

from data_helpers import LANG_TEXTS


def run_filter(f, texts: dict[str, str]) -> list[str]:
    docs = [Document(text=t, id=k) for k, t in texts.items()]
    return [d.id for d in f.run(iter(docs))]


def test_language_filter_keeps_en_vi_zh_and_drops_the_others():
    f = LanguageFilter(["en", "vi", "zh"], min_score=0.5)
    assert run_filter(f, LANG_TEXTS) == ["en", "vi", "zh"]
    stats = {k: v.total for k, v in f.stats.stats.items()}
    assert stats["dropped"] == 5 and stats["forwarded"] == 3
    assert {k for k in stats if k.startswith("dropped_lang_")} == {f"dropped_lang_{c}" for c in ("de", "fr", "es", "ru", "ja")}


def test_language_filter_records_language_and_score():
    doc = Document(text=LANG_TEXTS["vi"], id="x")
    assert LanguageFilter(["vi"]).filter(doc) is True
    assert doc.metadata["language"] == "vi" and doc.metadata["language_score"] > 0.9
    # English, but below the confidence asked for: dropped as low-score, not as another language.
    assert LanguageFilter(["en"], min_score=1.0).filter(Document(text=LANG_TEXTS["en"], id="y")) == (False, "lang_low_score")
    with pytest.raises(DataError, match="language.keep: xx not known to py3langid"):
        LanguageFilter(["en", "xx"])


def test_word_list_filter_whole_words_ratio_and_cjk():
    f = WordListFilter(["darn", "坏词"], max_ratio=0.0, name="profanity")
    texts = {
        "clean": "A perfectly darnless sentence about darning socks.",
        "latin": "Well, DARN it all.",
        "cjk": "这是一个坏词的例子",
        "clean_cjk": "这是一个好例子",
    }
    assert run_filter(f, texts) == ["clean", "clean_cjk"]
    assert f.stats.stats["dropped_profanity"].total == 2
    tolerant = WordListFilter(["darn"], max_ratio=0.2)
    assert run_filter(tolerant, {"one_in_ten": "darn " + "word " * 9, "half": "darn darn word word"}) == ["one_in_ten"]


def test_quality_filters_apply_only_to_the_listed_languages():
    short_en = Document(text="Too short.", id="en", metadata={"language": "en"})
    short_zh = Document(text="太短了。", id="zh", metadata={"language": "zh"})
    scoped = LanguageScoped(GopherQualityFilter(), ["en"])
    assert [d.id for d in scoped.run(iter([short_en, short_zh]))] == ["zh"]
    assert scoped.stats.stats["dropped_gopher_short_doc"].total == 1
