import io
import tarfile

import numpy as np
import pytest

from gpt_dist.data.shards import ShardWriter, member_stride, read_manifest, read_tokens
from gpt_dist.errors import DataError

from data_helpers import make_shard_set


def windows(n: int, seq_len: int, hi: int = 50000) -> np.ndarray:
    return np.random.default_rng(n).integers(0, hi, size=(n, seq_len + 1))


def test_writer_reader_round_trip_and_fixed_layout(tmp_path):
    data = windows(10, 31)
    make_shard_set(tmp_path, data, per_shard=4)
    m = read_manifest(tmp_path)
    assert [s.sequences for s in m.shards] == [4, 4, 2]
    assert m.sequences == 10 and m.tokens == 10 * 32 and m.dtype == "uint16"
    got = np.concatenate([read_tokens(tmp_path / s.name, s, 31, "uint16") for s in m.shards])
    assert (got == data).all()
    # Our shards take the memory-mapped path: a view into the file, no copy.
    arr = read_tokens(tmp_path / m.shards[0].name, m.shards[0], 31, "uint16")
    base = arr
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert base is not None and not arr.flags.writeable
    assert m.shards[0].bytes >= 4 * member_stride(31, "uint16")
    # No temporary files are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"] + [s.name for s in m.shards]


def test_shards_are_plain_webdataset(tmp_path):
    import webdataset as wds

    data = windows(5, 15, hi=70000)
    make_shard_set(tmp_path, data, per_shard=5, dtype="uint32")
    shard = tmp_path / read_manifest(tmp_path).shards[0].name
    samples = list(wds.WebDataset(str(shard), shardshuffle=False).decode())
    assert len(samples) == 5
    assert all(s["tokens.npy"].dtype == np.uint32 for s in samples)
    assert (np.stack([s["tokens.npy"] for s in samples]) == data).all()
    # Each member is a plain .npy, readable without pickle.
    with tarfile.open(shard) as tf:
        member = tf.getmembers()[0]
        arr = np.load(io.BytesIO(tf.extractfile(member).read()), allow_pickle=False)
    assert member.name.endswith(".tokens.npy") and (arr == data[0]).all()


def test_repacked_tar_is_read_by_the_fallback_parser(tmp_path):
    data = windows(3, 7)
    make_shard_set(tmp_path / "a", data, per_shard=3)
    m = read_manifest(tmp_path / "a")
    rec = m.shards[0]
    # Re-pack with different member names (other header layout): still readable, same tokens.
    src = tmp_path / "a" / rec.name
    dst = tmp_path / "repacked.tar"
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as tout:
        for i, member in enumerate(tin.getmembers()):
            payload = tin.extractfile(member).read()
            info = tarfile.TarInfo(f"sample-with-a-longer-name-{i}.tokens.npy")
            info.size = len(payload)
            tout.addfile(info, io.BytesIO(payload))
    rec.bytes = dst.stat().st_size
    got = read_tokens(dst, rec, 7, "uint16", verify=False)
    assert (got == data).all()


def test_truncated_and_corrupt_shards_name_the_shard(tmp_path):
    make_shard_set(tmp_path, windows(6, 15), per_shard=6)
    rec = read_manifest(tmp_path).shards[0]
    path = tmp_path / rec.name
    raw = bytearray(path.read_bytes())
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=rf"shard .*{rec.name}: .* bytes where the manifest says {rec.bytes} \(truncated"):
        read_tokens(path, rec, 15, "uint16")
    raw[1000] ^= 0xFF
    path.write_bytes(raw)
    with pytest.raises(DataError, match=rf"shard .*{rec.name}: sha256 .* does not match the manifest"):
        read_tokens(path, rec, 15, "uint16")


def test_an_unfinished_shard_never_appears_under_its_final_name(tmp_path):
    w = ShardWriter(tmp_path, "train-t00000-", 7, "uint16", sequences_per_shard=100)
    w.write(windows(3, 7))  # still open: the process could die here
    assert [p.name for p in tmp_path.iterdir()] == [".train-t00000-00000.tar.tmp"]
    w.close()
    assert [p.name for p in tmp_path.iterdir()] == ["train-t00000-00000.tar"]


def test_missing_manifest_explains_what_the_folder_is(tmp_path):
    (tmp_path / "out" / "train").mkdir(parents=True)
    (tmp_path / "out" / "train" / "manifest.json").write_text("{}")
    with pytest.raises(DataError, match=r"data.train\[0\].path: .*out is not a shard set .*it holds splits: use .*out/train"):
        read_manifest(tmp_path / "out", key="data.train[0].path")
    with pytest.raises(DataError, match=r"manifest.json: not a valid gpt_dist manifest"):
        read_manifest(tmp_path / "out" / "train")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "x.tar").write_bytes(b"")
    with pytest.raises(DataError, match=r"no manifest \(an interrupted `gpt-dist prepare`\): re-run it to finish"):
        read_manifest(tmp_path / "partial")
