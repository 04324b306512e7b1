"""`gpt-dist prepare` end to end: the README commands, round trip, dedup, bad input, resume, errors."""

import json
import random
import shlex
import shutil
import unicodedata
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpt_dist.config import ConfigError, TokenizerConfig
from gpt_dist.data.shard_loader import build_train_loader, build_val_loader, check_tokenizer_matches
from gpt_dist.data.prepare import build_jobs, init_work, plan_pipeline, run_local, run_prepare
from gpt_dist.data.prepare_config import load_prepare_config
from gpt_dist.data.shards import read_manifest
from gpt_dist.data.tokenizer import load_tokenizer
from gpt_dist.errors import DataError

from data_helpers import (
    LANG_TEXTS,
    decoded_documents,
    english_doc,
    loader_config,
    run_cli,
    shard_hashes,
    split_tokens,
    write_jsonl,
)

REPO = Path(__file__).resolve().parents[2]
INSPECT_JSON = "gpt-dist inspect data/sample --json --verify"  # docs/data.md


def prepare(tmp_path: Path, sources: list[dict], **over) -> Path:
    """run_prepare in this process (one task, one worker unless given)."""
    o = {"output": str(tmp_path / "out"), "sources": sources, "seq_len": 32, "val_fraction": 0.0,
         "executor": {"tasks": 1, "workers": 1}, "quality": {"enabled": False}}
    for k, v in over.items():
        o[k] = v
    run_prepare(load_prepare_config(None, o))
    return Path(o["output"])


# ------------------------------------------------------------------------------ README commands


def test_sample_and_inspect_as_in_the_readme(sample_data, readme_dir, capsys, gpt2_vocab):
    """`gpt-dist prepare --sample --output data/sample`, then `gpt-dist inspect data/sample/train`."""
    train, val = read_manifest(sample_data / "train"), read_manifest(sample_data / "val")
    assert train.seq_len == val.seq_len == 256 and train.dtype == "uint16"
    # Enough for a few hundred steps of micro-batch 4 on one rank before the first repeat.
    assert train.sequences >= 400 and val.sequences >= 20
    tok = load_tokenizer(TokenizerConfig(kind="gpt2", path=str(gpt2_vocab)))
    check_tokenizer_matches(train.tokenizer, tok)
    src = train.sources["pydoc"]
    assert src["documents_read"] > 250 and src["bad_input"] == {}
    assert src["after_dedup"] == src["documents"] + val.sources["pydoc"]["documents"]
    assert {"language (py3langid)", "exact dedup", "MinHash dedup"} <= set(train.filters)

    capsys.readouterr()
    assert run_cli("inspect", "data/sample/train", cwd=readme_dir) == 0
    out = capsys.readouterr().out
    assert f"{train.sequences:,} sequences x 257 tokens" in out
    assert "pydoc:" in out and "fingerprint" in out and "sample 0" in out
    text = tok.decode(split_tokens(sample_data / "train")[:257].tolist())
    assert text[:80].replace("\n", "\n    ") in out  # the decoded sample is shown

    # Portable: the manifest names no file of this machine (GPT-2's vocabulary ships with gpt_dist).
    text = (sample_data / "train" / "manifest.json").read_text()
    assert train.tokenizer["path"] is None and str(readme_dir) not in text and str(gpt2_vocab) not in text

    assert run_cli(*shlex.split(INSPECT_JSON)[1:], cwd=readme_dir) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {str(Path("data/sample/train")), str(Path("data/sample/val"))}
    assert all(r["verify_problems"] == [] for r in report.values())


def test_sample_trains_a_mini_model_for_hundreds_of_steps(sample_data):
    cfg = loader_config([(sample_data / "train", 1.0)], val=sample_data / "val", seq_len=256, batch=4,
                        extra=["model.preset=mini"])
    batches = list(islice(iter(build_train_loader(cfg, 0, 1)), 300))
    assert len(batches) == 300 and batches[-1]["input_ids"].shape == (4, 256)
    assert len(build_val_loader(cfg, 0, 1)) == 3


def test_sample_yaml_is_the_same_plan_as_the_sample_flag(tmp_path):
    from gpt_dist.commands.prepare import SAMPLE_OVERRIDES

    flag = plan_pipeline(load_prepare_config(None, dict(SAMPLE_OVERRIDES, output=str(tmp_path / "a"))))
    yaml = plan_pipeline(load_prepare_config(REPO / "configs" / "data" / "sample.yaml", {"output": str(tmp_path / "b")}))
    assert flag.digest == yaml.digest


def make_example_inputs(root: Path) -> dict[str, int]:
    """Inputs for configs/data/example.yaml under root/data/raw; returns what the filters should see."""
    rng = random.Random(5)
    web = [english_doc(rng, 150) for _ in range(300)]
    write_jsonl(root / "data/raw/web/a.jsonl.gz", [{"text": t} for t in web[:150]] + [b"{broken"], "gzip")
    write_jsonl(root / "data/raw/web/b.jsonl.gz",
                [{"text": t} for t in web[150:]] + [{"text": web[0]}, {"text": LANG_TEXTS["de"] * 5}], "gzip")
    (root / "data/raw/wiki").mkdir(parents=True)
    wiki = [english_doc(rng, 150) for _ in range(80)] + [LANG_TEXTS["vi"] * 3, LANG_TEXTS["zh"] * 3]
    wiki.append(english_doc(rng, 150) + " Then xyzzyspam.")
    pq.write_table(pa.table({"text": wiki}), root / "data/raw/wiki/part-0.parquet")
    (root / "data/raw/books").mkdir(parents=True)
    (root / "data/raw/books/one.txt").write_text("\n\n".join(english_doc(rng, 150) for _ in range(40)), encoding="utf-8")
    (root / "configs/data").mkdir(parents=True)
    shutil.copy(REPO / "configs/data/example.yaml", root / "configs/data/example.yaml")
    return {"read": 300 + 3 + 83 + 40, "bad": 1}


def test_example_config_with_two_workers_as_in_the_readme(tmp_path):
    """`gpt-dist prepare configs/data/example.yaml --seq-len 256`: two worker processes."""
    expect = make_example_inputs(tmp_path)
    assert run_cli("prepare", "configs/data/example.yaml", "--seq-len", "256", cwd=tmp_path) == 0
    out = tmp_path / "data/example"
    train = read_manifest(out / "train")
    assert train.config["tasks"] == 2 and train.seq_len == 256
    read = sum(s["documents_read"] for s in train.sources.values())
    assert read == expect["read"] and train.bad_input == {"malformed_json": expect["bad"]}
    f = train.filters
    assert f["language (py3langid)"]["reasons"] == {"lang_de": 1}
    assert f["word list (profanity)"]["reasons"] == {"profanity": 1}
    assert f["exact dedup"]["dropped"] == 1
    kept = sum(s["after_dedup"] for s in train.sources.values())
    assert kept == expect["read"] - 1 - 1 - 1 - 1  # bad line, German, profanity, exact copy
    assert train.sources["wiki"]["after_filters"] == 82  # vi and zh pass: quality rules are English-only
    # The same plan run in this process with one worker writes byte-identical shards.
    assert run_cli("prepare", "configs/data/example.yaml", "--seq-len", "256", "--workers", "1",
                   "--output", "data/example1", cwd=tmp_path) == 0
    for split in ("train", "val"):
        assert shard_hashes(out / split) == shard_hashes(tmp_path / "data/example1" / split)


# -------------------------------------------------------------------------------- behaviour


def test_round_trip_text_to_shards_to_loader_and_back(tmp_path):
    rng = random.Random(0)
    docs = [english_doc(rng, 40) for _ in range(10)]
    vi_nfd = unicodedata.normalize("NFD", LANG_TEXTS["vi"])
    records = docs[:4] + [LANG_TEXTS["de"], vi_nfd, LANG_TEXTS["zh"], LANG_TEXTS["ja"]] + docs[4:]
    write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in records])
    out = prepare(tmp_path, [{"name": "mix", "path": str(tmp_path / "in.jsonl")}],
                  exact_dedup={"enabled": False}, minhash={"enabled": False})
    # Languages other than en / vi / zh are gone; the Vietnamese text comes back NFC-normalised.
    expected = docs[:4] + [unicodedata.normalize("NFC", vi_nfd), LANG_TEXTS["zh"]] + docs[4:]
    got = decoded_documents(out / "train")
    assert got == expected[:len(got)] and len(got) >= len(expected) - 1
    stream = split_tokens(out / "train")
    n = stream.size // 33
    # The validation loader (fixed order) over all windows gives the packed stream back...
    cfg = loader_config([(out / "train", 1.0)], val=out / "train", seq_len=32, batch=1, extra=[f"eval.batches={n}"])
    windows = [np.concatenate([b["input_ids"][0].numpy(), b["labels"][0, -1:].numpy()]) for b in build_val_loader(cfg, 0, 1)]
    assert (np.concatenate(windows) == stream).all()
    # ...and one epoch of the shuffled training loader holds each window exactly once.
    train = build_train_loader(cfg, 0, 1)
    epoch = [np.concatenate([b["input_ids"][0].numpy(), b["labels"][0, -1:].numpy()]) for b in islice(iter(train), n)]
    assert sorted(map(tuple, epoch)) == sorted(map(tuple, windows))


def test_exact_and_near_duplicates_are_removed_and_nothing_else(tmp_path):
    rng = random.Random(1)
    originals = [english_doc(rng, 150) for _ in range(20)]
    exact = [originals[0], "  " + originals[1].replace(" ", "  ") + "\n", originals[2]]

    def near(doc: str) -> str:
        words = doc.split(" ")
        words[len(words) // 2] = "zebra"
        return " ".join(words)

    nears = [near(originals[i]) for i in (3, 4, 5)]
    write_jsonl(tmp_path / "raw/a.jsonl", [{"text": t} for t in originals])
    write_jsonl(tmp_path / "raw/b.jsonl", [{"text": t} for t in exact + nears])
    out = prepare(tmp_path, [{"name": "raw", "path": str(tmp_path / "raw")}], seq_len=64)
    m = read_manifest(out / "train")
    assert m.filters["exact dedup"]["dropped"] == 3
    assert m.filters["MinHash dedup"]["dropped"] == 3
    assert m.sources["raw"]["after_dedup"] == 20
    got = decoded_documents(out / "train")
    kept = set(got)
    assert set(originals[:3] + originals[6:19]) <= kept  # every document without a duplicate is kept
    for i, n in zip((3, 4, 5), nears):
        assert (originals[i] in kept) != (n in kept)  # one of each near-duplicate pair
    assert len(got) == len(set(got))  # nothing twice


def test_bad_input_is_counted_and_strict_fails_fast(tmp_path, capsys):
    rng = random.Random(2)
    good = [{"text": english_doc(rng, 80)} for _ in range(6)]
    write_jsonl(tmp_path / "raw/web/a.jsonl", good[:3] + [b'{"text": "cut', {"title": "no text"}, {"text": ""}])
    (tmp_path / "raw/web/b.jsonl").write_bytes(b'{"text": "\xff\xfe"}\n' + json.dumps(good[3]).encode() + b"\n")
    pq.write_table(pa.table({"text": [good[4]["text"], None, good[5]["text"]]}), tmp_path / "raw/wiki.parquet")
    rc = run_cli("prepare", "--input", "raw/web", "raw/wiki.parquet", "--output", "out", "--seq-len", "16",
                 "--val-fraction", "0", "--tasks", "1", cwd=tmp_path)
    assert rc == 0
    m = read_manifest(tmp_path / "out/train")
    assert m.bad_input == {"malformed_json": 1, "missing_text_field": 2, "empty_document": 1, "non_utf8": 1}
    assert m.sources["web"]["bad_input"] == {"malformed_json": 1, "missing_text_field": 1, "empty_document": 1,
                                             "non_utf8": 1}
    assert m.sources["wiki"]["bad_input"] == {"missing_text_field": 1}
    assert m.sources["web"]["after_dedup"] == 4 and m.sources["wiki"]["after_dedup"] == 2
    assert "bad input: empty_document 1, malformed_json 1, missing_text_field 2, non_utf8 1" in capsys.readouterr().out
    rc = run_cli("prepare", "--input", "raw/web", "--output", "strict", "--seq-len", "16", "--tasks", "1",
                 "--strict", cwd=tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and "a.jsonl:4: a line that is not a JSON object (malformed_json)" in err
    assert not (tmp_path / "strict/train/manifest.json").exists()


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    rng = random.Random(3)
    for i in range(2):
        write_jsonl(tmp_path / f"raw/{i}.jsonl", [{"text": english_doc(rng, 60)} for _ in range(12)])
    o = {"sources": [{"name": "raw", "path": str(tmp_path / "raw")}], "seq_len": 16, "val_fraction": 0.2,
         "executor": {"tasks": 2, "workers": 1}, "quality": {"enabled": False}}
    reference = load_prepare_config(None, dict(o, output=str(tmp_path / "ref")))
    run_prepare(reference)

    cfg = load_prepare_config(None, dict(o, output=str(tmp_path / "out")))
    plan = plan_pipeline(cfg)
    init_work(plan)
    jobs = build_jobs(plan)
    tokenize = [j for j in jobs if j.name == "tokenize"][0]
    run_local(plan, jobs[:jobs.index(tokenize)])
    # The tokenize job dies after task 0 finished and while task 1 was writing its first shard.
    from datatrove.executor import LocalPipelineExecutor

    LocalPipelineExecutor(tokenize.pipeline, tasks=2, workers=1, local_tasks=1,
                          logging_dir=str(Path(plan.work) / "logs" / "tokenize")).run()
    out = tmp_path / "out"
    (out / "train" / ".train-t00001-00000.tar.tmp").write_bytes(b"half a shard")
    assert not (out / "train" / "manifest.json").exists()
    with pytest.raises(DataError, match="is not a shard set"):
        build_train_loader(loader_config([(out / "train", 1.0)], seq_len=16), 0, 1)
    clean_stats = Path(plan.work) / "logs" / "clean" / "stats" / "00000.json"
    task0 = {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("train-t00000-*")}
    before = clean_stats.stat().st_mtime_ns

    result = run_prepare(cfg)  # the same command again
    assert result.status == "done"
    assert clean_stats.stat().st_mtime_ns == before  # finished jobs are skipped
    assert {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("train-t00000-*")} == task0
    assert not list((out / "train").glob(".*.tmp"))
    for split in ("train", "val"):
        assert shard_hashes(out / split) == shard_hashes(tmp_path / "ref" / split)
    assert run_prepare(cfg).status == "complete"

    changed = load_prepare_config(None, dict(o, output=str(out), seq_len=32))
    with pytest.raises(DataError, match=r"holds shards from a different configuration.*--overwrite"):
        run_prepare(changed)


def test_output_folders_of_another_tokenizer_empty_results_and_dtype(tmp_path, sample_data, readme_dir):
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

    # A byte-level BPE with 70,000 ids: its ids do not fit uint16.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab.update({f"unused{i}": len(vocab) + i for i in range(70000 - len(vocab) - 1)})
    vocab["<|endoftext|>"] = len(vocab)
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens(["<|endoftext|>"])
    hf.save(str(tmp_path / "big.json"))
    write_jsonl(tmp_path / "in.jsonl", [{"text": english_doc(random.Random(4), 40)} for _ in range(4)])
    src = [{"name": "in", "path": str(tmp_path / "in.jsonl")}]
    big = {"kind": "bpe", "path": str(tmp_path / "big.json")}

    with pytest.raises(DataError, match="uint16 holds ids below 65536 but the tokenizer has 70000 ids; use dtype: uint32"):
        prepare(tmp_path, src, tokenizer=big, dtype="uint16")
    out = prepare(tmp_path, src, tokenizer=big)
    m = read_manifest(out / "train")
    assert m.dtype == "uint32" and m.tokenizer["vocab_size"] == 70000

    # The sample folder holds GPT-2 shards: another tokenizer must not write into it.
    with pytest.raises(DataError, match=r"data/sample/train holds shards made with another tokenizer \(gpt2 .*this run: bpe"):
        run_prepare(load_prepare_config(None, {"output": str(sample_data), "sources": src, "tokenizer": big}))
    assert run_cli("prepare", "--input", str(tmp_path / "in.jsonl"), "--output", "data/sample",
                   cwd=readme_dir) == 2  # same tokenizer, other inputs: refused too

    write_jsonl(tmp_path / "de.jsonl", [{"text": LANG_TEXTS["de"]}, {"text": LANG_TEXTS["fr"]}])
    with pytest.raises(DataError, match=r"nothing left to write: 2 documents read, 0 bad input, .*language \(py3langid\): 2"):
        prepare(tmp_path / "empty", [{"name": "de", "path": str(tmp_path / "de.jsonl")}])


def test_config_errors_name_the_key_and_the_fix(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: x\nsources: [{name: a, path: a.jsonl}]\nminhash: {treshold: 0.9}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'minhash.treshold'; did you mean 'minhash.threshold'\?"):
        load_prepare_config(bad)
    with pytest.raises(ConfigError, match="sources: no input; list sources in the config, or give --input FILES / --sample"):
        load_prepare_config(None, {"output": "x"})
    with pytest.raises(ConfigError, match=r"executor.slurm.partition: required with executor.kind: slurm"):
        load_prepare_config(None, {"output": "x", "sources": [{"name": "a", "path": "a"}], "executor": {"kind": "slurm"}})
