import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpt_dist.data.readers import (
    JsonlSource,
    ParquetSource,
    SampleCorpus,
    TextSource,
    bad_input_counts,
    resolve_files,
)
from gpt_dist.errors import DataError

from data_helpers import write_jsonl

GOOD = {"text": "a good document"}
BAD_LINES = [
    GOOD,
    b'{"text": "unterminated',                   # malformed_json
    b"[1, 2, 3]",                                # malformed_json (not an object)
    b'{"text": "caf\xe9 latin-1 bytes"}',        # non_utf8
    {"body": "the text is under another key"},   # missing_text_field
    {"text": None},                              # missing_text_field
    {"text": 42},                                # text_not_string
    {"text": "   \n\t "},                        # empty_document
    b"",                                         # a blank line: not a record
    {"text": "another good one", "id": "doc-7"},
]
EXPECTED = {"malformed_json": 2, "non_utf8": 1, "missing_text_field": 2, "text_not_string": 1, "empty_document": 1}


def read_all(reader, files):
    return list(reader.read_files_shard(files))


@pytest.mark.parametrize("compress,name", [(None, "x.jsonl"), ("gzip", "x.jsonl.gz"), ("zstd", "x.jsonl.zst")])
def test_jsonl_bad_lines_are_counted_per_reason_and_reading_goes_on(tmp_path, compress, name):
    write_jsonl(tmp_path / name, BAD_LINES, compress)
    r = JsonlSource("web", str(tmp_path), "")
    docs = read_all(r, [name])
    assert [d.text for d in docs] == ["a good document", "another good one"]
    assert docs[1].id == "doc-7" and docs[0].metadata["source"] == "web"
    assert bad_input_counts([r]) == EXPECTED


def test_strict_mode_fails_on_the_first_bad_line_naming_file_and_line(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", BAD_LINES)
    r = JsonlSource("web", str(tmp_path), "", strict=True)
    with pytest.raises(DataError, match=r"x.jsonl:2: a line that is not a JSON object \(malformed_json\); .*without --strict"):
        read_all(r, ["x.jsonl"])


def test_truncated_gzip_keeps_what_was_read_and_counts_the_file(tmp_path):
    data = gzip.compress(b"".join(b'{"text": "doc %d"}\n' % i for i in range(50000)))
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    r = JsonlSource("web", str(tmp_path), "")
    docs = read_all(r, ["cut.jsonl.gz"])
    assert 0 < len(docs) < 50000 and [d.text for d in docs[:2]] == ["doc 0", "doc 1"]
    assert bad_input_counts([r]) == {"unreadable_file": 1}


def test_parquet_text_column_nulls_types_and_missing_column(tmp_path):
    pq.write_table(pa.table({"text": ["one", None, "", "two"], "id": ["a", "b", "c", "d"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"body": ["no text column"]}), tmp_path / "b.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "c.parquet")
    (tmp_path / "d.parquet").write_bytes(b"PAR1 not really parquet")
    r = ParquetSource("pq", str(tmp_path), "")
    docs = read_all(r, ["a.parquet", "b.parquet", "c.parquet", "d.parquet"])
    assert [(d.id, d.text) for d in docs] == [("a", "one"), ("d", "two")]
    assert bad_input_counts([r]) == {"missing_text_field": 2, "empty_document": 1, "text_not_string": 2,
                                     "unreadable_file": 1}
    with pytest.raises(DataError, match=r"b.parquet: no column 'text' \(columns: body\); set text_key"):
        read_all(ParquetSource("pq", str(tmp_path), "", strict=True), ["b.parquet"])


def test_text_files_by_file_paragraph_and_line(tmp_path):
    (tmp_path / "a.txt").write_bytes("first para\nstill first\n\n\nsecond\n".encode() + b"\n\xff\xfe bad bytes\n")
    (tmp_path / "empty.txt").write_bytes(b"  \n")
    by_file = TextSource("t", str(tmp_path), "", unit="file")
    assert read_all(by_file, ["a.txt", "empty.txt"]) == []
    assert bad_input_counts([by_file]) == {"non_utf8": 1, "empty_document": 1}
    by_para = TextSource("t", str(tmp_path), "", unit="paragraph")
    assert [d.text for d in read_all(by_para, ["a.txt"])] == ["first para\nstill first", "second"]
    assert bad_input_counts([by_para]) == {"non_utf8": 1}
    by_line = TextSource("t", str(tmp_path), "", unit="line")
    assert [d.text for d in read_all(by_line, ["a.txt"])] == ["first para", "still first", "second"]


def test_sample_corpus_is_split_across_tasks_without_overlap():
    docs = [list(SampleCorpus().run(None, rank, 3)) for rank in range(3)]
    ids = [d.id for part in docs for d in part]
    assert len(ids) == len(set(ids)) == len(list(SampleCorpus().run(None, 0, 1))) > 200
    assert all(len(d.text) <= 2000 or "\n\n" not in d.text for part in docs for d in part)


def test_resolve_files_by_folder_glob_and_format(tmp_path):
    write_jsonl(tmp_path / "raw" / "a.jsonl", [GOOD])
    write_jsonl(tmp_path / "raw" / "sub" / "b.jsonl.gz", [GOOD], "gzip")
    (tmp_path / "raw" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"raw mixes jsonl, txt files; set format"):
        resolve_files(str(tmp_path / "raw"))
    base, files, fmt = resolve_files(str(tmp_path / "raw" / "**" / "*.jsonl*"))
    assert (fmt, files) == ("jsonl", ["a.jsonl", "sub/b.jsonl.gz"])
    assert resolve_files(str(tmp_path / "raw"), "txt")[1] == ["notes.txt"]
    with pytest.raises(DataError, match=r"sources\[0\].path: .*nothing.jsonl: no such file"):
        resolve_files(str(tmp_path / "nothing.jsonl"), key="sources[0].path")
