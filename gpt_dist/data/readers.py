"""Datatrove readers for the raw corpora `gpt-dist prepare` and `train-tokenizer` accept.

    jsonl   .jsonl / .jsonl.gz / .jsonl.zst (.ndjson too), one JSON object per line, text under `text_key`
    parquet .parquet, text in column `text_key`
    txt     .txt (also .gz / .zst), one document per file, per blank-line paragraph, or per line
    sample  the built-in sample corpus: the pydoc topic texts every Python install ships

Bad input never stops the job: each reader counts it per reason (a datatrove stat named
`bad_input/<reason>`, which ends up in the manifest) and goes on. With `strict=True` the first
bad record raises a DataError naming the file and line.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseDiskReader, BaseReader

from gpt_dist.errors import DataError

FORMATS = ("jsonl", "parquet", "txt", "sample")
TXT_UNITS = ("file", "paragraph", "line")
BAD_INPUT_REASONS = {
    "malformed_json": "a line that is not a JSON object",
    "non_utf8": "bytes that are not valid UTF-8",
    "missing_text_field": "no text field (or null)",
    "text_not_string": "a text field that is not a string",
    "empty_document": "a document with no text after stripping whitespace",
    "unreadable_file": "a file that could not be read to the end (truncated or corrupt compression)",
}
BAD_INPUT_STAT = "bad_input/"

_EXTENSIONS = {
    "jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".ndjson.gz", ".ndjson.zst", ".json.gz", ".json.zst"),
    "parquet": (".parquet",),
    "txt": (".txt", ".txt.gz", ".txt.zst"),
}


def format_of(path: str) -> str | None:
    name = path.lower()
    for fmt, exts in _EXTENSIONS.items():
        if name.endswith(exts):
            return fmt
    return None


def resolve_files(path: str, fmt: str = "auto", *, key: str = "path") -> tuple[str, list[str], str]:
    """(base directory, sorted file paths relative to it, format) for a file, folder or glob.

    `key` names the config field in error messages.
    """
    if any(ch in path for ch in "*?["):
        matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        base = _glob_base(path)
    elif os.path.isdir(path):
        base = path
        matches = sorted(str(p) for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith("."))
    elif os.path.isfile(path):
        base = os.path.dirname(path) or "."
        matches = [path]
    else:
        raise DataError(f"{key}: {path}: no such file, folder or glob match; check the path")
    if fmt == "auto":
        found = {format_of(m) for m in matches} - {None}
        if len(found) > 1:
            raise DataError(
                f"{key}: {path} mixes {', '.join(sorted(found))} files; set format: jsonl|parquet|txt or use a glob"
            )
        if not found:
            raise DataError(
                f"{key}: {path}: no .jsonl(.gz/.zst), .parquet or .txt files found; "
                f"set format: jsonl|parquet|txt if the extensions differ"
            )
        fmt = found.pop()
        matches = [m for m in matches if format_of(m) == fmt]
    elif os.path.isdir(path):
        matches = [m for m in matches if format_of(m) == fmt] or matches
    if not matches:
        raise DataError(f"{key}: {path}: no input files found")
    base = os.path.abspath(base)
    return base, [os.path.relpath(os.path.abspath(m), base) for m in matches], fmt


def _glob_base(pattern: str) -> str:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def iter_lines(f, chunk: int = 1 << 16) -> Iterator[bytes]:
    """Lines of a binary file object, without their "\\n" (fsspec's zstd files cannot be iterated)."""
    rest = b""
    while data := f.read(chunk):
        *lines, rest = (rest + data).split(b"\n")
        yield from lines
    if rest:
        yield rest


class _Accounting:
    """Bad-input bookkeeping shared by our readers (mixed into datatrove reader classes)."""

    source: str
    strict: bool

    def bad(self, reason: str, where: str, count: int = 1) -> None:
        assert reason in BAD_INPUT_REASONS, reason
        if self.strict:
            raise DataError(
                f"{where}: {BAD_INPUT_REASONS[reason]} ({reason}); fix the input, or run without --strict "
                f"to skip and count such records"
            )
        self.stat_update(BAD_INPUT_STAT + reason, value=count)

    def make_doc(self, text, where: str, doc_id: str) -> Document | None:
        if text is None:
            self.bad("missing_text_field", where)
            return None
        if not isinstance(text, str):
            self.bad("text_not_string", where)
            return None
        if not text.strip():
            self.bad("empty_document", where)
            return None
        return Document(text=text, id=doc_id, metadata={"source": self.source})


class JsonlSource(_Accounting, BaseDiskReader):
    """JSON lines, plain or gzip/zstd-compressed, read as bytes so each bad line is counted alone.

    (datatrove's JsonlReader reads text mode and gives up on the rest of a file at the first
    non-UTF-8 byte; here such a line is counted and the next one read.)
    """

    type = "📖 - READER"

    def __init__(self, source: str, data_folder: str, paths_file: str, text_key: str = "text",
                 id_key: str = "id", strict: bool = False):
        self.name = f"read {source} (jsonl)"
        super().__init__(data_folder, paths_file=paths_file, text_key=text_key, id_key=id_key)
        self.source = source
        self.strict = strict

    def read_file(self, filepath: str) -> DocumentsPipeline:
        import orjson

        path = self.data_folder.resolve_paths(filepath)
        lineno = 0
        try:
            with self.data_folder.open(filepath, "rb", compression="infer") as f:
                for lineno, raw in enumerate(iter_lines(f), start=1):
                    try:
                        obj = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        if not raw.strip():
                            continue  # blank lines separate nothing; not a record
                        try:
                            raw.decode("utf-8")
                            reason = "malformed_json"
                        except UnicodeDecodeError:
                            reason = "non_utf8"
                        self.bad(reason, f"{path}:{lineno}")
                        continue
                    if not isinstance(obj, dict):
                        self.bad("malformed_json", f"{path}:{lineno}")
                        continue
                    doc_id = obj.get(self.id_key)
                    doc = self.make_doc(obj.get(self.text_key), f"{path}:{lineno}", str(doc_id or f"{filepath}:{lineno}"))
                    if doc is not None:
                        yield doc
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated gzip, corrupt zstd frame, zlib.error, I/O error
            self.bad("unreadable_file", f"{path} after line {lineno} ({type(e).__name__}: {e})")


class ParquetSource(_Accounting, BaseDiskReader):
    """Parquet files, read one record batch at a time, text from column `text_key`."""

    type = "📖 - READER"

    def __init__(self, source: str, data_folder: str, paths_file: str, text_key: str = "text",
                 id_key: str = "id", strict: bool = False, batch_size: int = 1000):
        self.name = f"read {source} (parquet)"
        super().__init__(data_folder, paths_file=paths_file, text_key=text_key, id_key=id_key)
        self.source = source
        self.strict = strict
        self.batch_size = batch_size

    def read_file(self, filepath: str) -> DocumentsPipeline:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.data_folder.resolve_paths(filepath)
        row = 0
        try:
            with self.data_folder.open(filepath, "rb") as f:
                pf = pq.ParquetFile(f)
                names = pf.schema_arrow.names
                if self.text_key not in names:
                    if self.strict:
                        raise DataError(
                            f"{path}: no column {self.text_key!r} (columns: {', '.join(names)}); "
                            f"set text_key for this source"
                        )
                    self.bad("missing_text_field", f"{path}: no column {self.text_key!r}", count=pf.metadata.num_rows)
                    return
                columns = [self.text_key] + ([self.id_key] if self.id_key in names else [])
                for batch in pf.iter_batches(batch_size=self.batch_size, columns=columns):
                    texts = batch.column(self.text_key)
                    is_str = pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)
                    ids = batch.column(self.id_key).to_pylist() if self.id_key in columns else [None] * len(texts)
                    for text, doc_id in zip(texts.to_pylist(), ids):
                        row += 1
                        where = f"{path}: row {row}"
                        if text is not None and not is_str:
                            self.bad("text_not_string", where)
                            continue
                        doc = self.make_doc(text, where, str(doc_id or f"{filepath}:{row}"))
                        if doc is not None:
                            yield doc
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - not parquet, truncated, corrupt pages, I/O error
            self.bad("unreadable_file", f"{path} after row {row} ({type(e).__name__}: {e})")


class TextSource(_Accounting, BaseDiskReader):
    """Plain UTF-8 text: one document per file (`unit="file"`), per paragraph or per line."""

    type = "📖 - READER"

    def __init__(self, source: str, data_folder: str, paths_file: str, unit: str = "file", strict: bool = False):
        self.name = f"read {source} (txt)"
        super().__init__(data_folder, paths_file=paths_file)
        self.source = source
        self.strict = strict
        self.unit = unit

    def read_file(self, filepath: str) -> DocumentsPipeline:
        path = self.data_folder.resolve_paths(filepath)
        try:
            with self.data_folder.open(filepath, "rb", compression="infer") as f:
                if self.unit == "file":
                    pieces: Iterator[tuple[int, bytes]] = iter([(1, f.read())])
                else:
                    pieces = self._stream(f)
                for i, raw in pieces:
                    where = path if self.unit == "file" else f"{path}: {self.unit} {i}"
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        self.bad("non_utf8", where)
                        continue
                    doc = self.make_doc(text, where, f"{filepath}:{i}")
                    if doc is not None:
                        yield doc
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated gzip, corrupt zstd frame, I/O error
            self.bad("unreadable_file", f"{path} ({type(e).__name__}: {e})")

    def _stream(self, f) -> Iterator[tuple[int, bytes]]:
        """(number, bytes) of each line or paragraph, reading the file line by line (bounded memory)."""
        para: list[bytes] = []
        n = 0
        for line in iter_lines(f):
            if self.unit == "line":
                if line.strip():
                    n += 1
                    yield n, line.rstrip(b"\r")
            elif line.strip():
                para.append(line)
            elif para:
                n += 1
                yield n, b"\n".join(para)
                para = []
        if para:
            yield n + 1, b"\n".join(para)


class SampleCorpus(_Accounting, BaseReader):
    """The built-in sample: pydoc's topic help texts (`pydoc_data.topics`).

    Every CPython install ships them (about 80 texts, 0.5 MB, ~140k GPT-2 tokens), so the
    README's first run and the tests need no download. Topics are cut at paragraph breaks into
    documents of about `chunk_chars` characters (a few topics are very long, and the validation
    split is drawn per document), and dealt round-robin to the tasks.
    """

    type = "📖 - READER"

    def __init__(self, source: str = "sample", strict: bool = False, chunk_chars: int = 2000):
        self.name = f"read {source} (sample)"
        super().__init__()
        self.source = source
        self.strict = strict
        self.chunk_chars = chunk_chars

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        i = 0
        for name, text in sample_topics():
            for j, chunk in enumerate(_paragraph_chunks(text, self.chunk_chars)):
                i += 1
                if (i - 1) % world_size != rank:
                    continue
                self.stat_update("documents")
                doc = self.make_doc(chunk, f"pydoc_data.topics[{name!r}]", f"pydoc/{name}#{j}")
                if doc is not None:
                    self.update_doc_stats(doc)
                    yield doc


def sample_topics() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return sorted(topics.items())


def _paragraph_chunks(text: str, limit: int) -> list[str]:
    out, cur = [], ""
    for para in re.split(r"\n[ \t]*\n", text):
        if cur and len(cur) + len(para) > limit:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n\n{para}" if cur else para
    if cur.strip():
        out.append(cur)
    return out


def make_reader(source: str, fmt: str, data_folder: str, paths_file: str, *, text_key: str = "text",
                id_key: str = "id", txt_unit: str = "file", strict: bool = False) -> BaseReader:
    """The reader step for one configured source."""
    if fmt == "jsonl":
        return JsonlSource(source, data_folder, paths_file, text_key=text_key, id_key=id_key, strict=strict)
    if fmt == "parquet":
        return ParquetSource(source, data_folder, paths_file, text_key=text_key, id_key=id_key, strict=strict)
    if fmt == "txt":
        return TextSource(source, data_folder, paths_file, unit=txt_unit, strict=strict)
    if fmt == "sample":
        return SampleCorpus(source, strict=strict)
    raise DataError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")


def iter_documents(paths: list[str], *, text_key: str = "text", txt_unit: str = "line",
                   fmt: str = "auto") -> tuple[Iterator[str], list[BaseReader]]:
    """Texts of every document in `paths` (files, folders, globs) in order, for tokenizer training.

    Returns the iterator and the reader steps, whose `.stats` hold the bad-input counts once the
    iterator is exhausted.
    """
    readers: list[BaseReader] = []
    plans = []
    for p in paths:
        base, files, f = resolve_files(p, fmt, key="--input")
        readers.append(make_reader(Path(p).name or p, f, base, "", text_key=text_key, txt_unit=txt_unit))
        plans.append(files)

    def texts() -> Iterator[str]:
        for reader, files in zip(readers, plans):
            for doc in reader.read_files_shard(files):
                yield doc.text

    return texts(), readers


def bad_input_counts(readers: list[BaseReader]) -> dict[str, int]:
    """Bad-input counts per reason, summed over `readers` (their in-memory datatrove stats)."""
    out: dict[str, int] = {}
    for r in readers:
        for label, metric in r.stats.stats.items():
            if label.startswith(BAD_INPUT_STAT):
                reason = label[len(BAD_INPUT_STAT):]
                out[reason] = out.get(reason, 0) + int(metric.total)
    return out
