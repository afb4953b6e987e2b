"""The sync manifest: the diff of a folder against it (pure logic), excludes, scanning, atomic persistence."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from vmlab.agent.manifest import PARTS_DIGEST, Entry, Excludes, Manifest, Stat, diff, md5_reader, part_count, scan
from vmlab.errors import BadInput


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def entry(size: int, mtime_ns: int, data: bytes) -> Entry:
    return Entry(size, mtime_ns, md5(data), md5(data))


def hashes(contents: dict[str, bytes]):
    calls: list[str] = []

    def md5_of(rel: str, like: str = "") -> str | None:
        calls.append(rel)
        return md5(contents[rel]) if rel in contents else None

    return md5_of, calls


@pytest.mark.parametrize(
    ("case", "local", "known", "contents", "expect", "hashed"),
    [
        ("nothing", {}, {}, {}, dict(), []),
        ("unchanged: size and mtime equal, no hashing",
         {"a": Stat(3, 100)}, {"a": entry(3, 100, b"abc")}, {"a": b"abc"}, dict(), []),
        ("new file", {"a": Stat(3, 100)}, {}, {}, dict(new={"a"}), []),
        ("deleted known file", {}, {"a": entry(3, 100, b"abc")}, {}, dict(deleted={"a"}), []),
        ("size changed", {"a": Stat(4, 200)}, {"a": entry(3, 100, b"abc")}, {"a": b"abcd"},
         dict(changed={"a"}), ["a"]),
        ("same size, newer mtime, new bytes", {"a": Stat(3, 200)}, {"a": entry(3, 100, b"abc")},
         {"a": b"xyz"}, dict(changed={"a"}), ["a"]),
        ("same size, OLDER mtime, new bytes", {"a": Stat(3, 50)}, {"a": entry(3, 100, b"abc")},
         {"a": b"xyz"}, dict(changed={"a"}), ["a"]),
        ("touched: mtime differs, bytes equal", {"a": Stat(3, 200)}, {"a": entry(3, 100, b"abc")},
         {"a": b"abc"}, dict(touched={"a"}), ["a"]),
        ("vanished before hashing: left for the next pass", {"a": Stat(3, 200)},
         {"a": entry(3, 100, b"abc")}, {}, dict(), ["a"]),
        ("rename: new path + delete of the old", {"b": Stat(3, 100)}, {"a": entry(3, 100, b"abc")},
         {"b": b"abc"}, dict(new={"b"}, deleted={"a"}), []),
    ],
)
def test_diff(case, local, known, contents, expect, hashed) -> None:
    md5_of, calls = hashes(contents)
    result = diff(local, known, md5_of)
    assert result.new == expect.get("new", set()), case
    assert result.changed == expect.get("changed", set()), case
    assert result.deleted == expect.get("deleted", set()), case
    assert set(result.touched) == expect.get("touched", set()), case
    assert calls == hashed, case
    assert bool(result) == bool(expect), case


def test_diff_touched_carries_new_stat_and_md5() -> None:
    md5_of, _ = hashes({"a": b"abc"})
    result = diff({"a": Stat(3, 200)}, {"a": entry(3, 100, b"abc")}, md5_of)
    assert result.touched == {"a": (Stat(3, 200), md5(b"abc"))}
    assert result.uploads == []


def test_diff_deletes_only_known_paths() -> None:
    md5_of, _ = hashes({})
    result = diff({}, {"known": entry(1, 1, b"x")}, md5_of)
    assert result.deleted == {"known"}


@pytest.mark.parametrize(
    ("rel", "excluded"),
    [
        ("a.ipynb", False),
        (".ipynb_checkpoints/a-checkpoint.ipynb", True),
        ("deep/.ipynb_checkpoints/a-checkpoint.ipynb", True),
        ("notes/.~lock.report.odt#", True),
        (".~vmlab-1234-a.txt", True),
        ("pkg/__pycache__/m.cpython-311.pyc", True),
        ("my__pycache__notes.txt", False),
        ("a~.txt", False),
    ],
)
def test_default_excludes(rel: str, excluded: bool) -> None:
    assert Excludes().matches(rel) is excluded


def test_extra_excludes_by_name_and_by_path() -> None:
    ex = Excludes(extra=["*.tmp", "scratch/big"])
    assert ex.matches("x/y.tmp")
    assert ex.matches("scratch/big")
    assert ex.matches("scratch/big/file.bin")
    assert not ex.matches("scratch/small/file.bin")
    assert not ex.matches("other/scratch/big/file.bin")
    assert Excludes(patterns=[]).matches(".ipynb_checkpoints/a") is False


def test_scan_skips_excludes_and_symlinks(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "b.txt").write_text("bb")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "a-checkpoint.txt").write_text("a")
    (tmp_path / "link").symlink_to(tmp_path / "a.txt")
    (tmp_path / "dirlink").symlink_to(tmp_path / "sub")
    found = scan(tmp_path, Excludes())
    assert set(found) == {"a.txt", "sub/deeper/b.txt"}
    st = os.stat(tmp_path / "sub" / "deeper" / "b.txt")
    assert found["sub/deeper/b.txt"] == Stat(2, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def test_scan_only_given_paths(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "new" / "inner").mkdir(parents=True)
    (tmp_path / "new" / "inner" / "c.txt").write_text("c")
    found = scan(tmp_path, Excludes(), only=["new", "missing.txt", ".ipynb_checkpoints/x"])
    assert set(found) == {"new/inner/c.txt"}
    assert set(scan(tmp_path, Excludes(), only=[""])) == {"a.txt", "new/inner/c.txt"}


def test_md5_reader(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    read = md5_reader(tmp_path)
    assert read("a") == md5(b"abc")
    assert read("gone") is None


def test_manifest_round_trip_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "manifest.json"
    m = Manifest.load(path, "s3://b/p/")
    assert m.entries == {}
    m.record("a", entry(3, 100, b"abc"))
    m.save()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]  # no temporary left behind
    again = Manifest.load(path, "s3://b/p/")
    assert again.entries == {"a": entry(3, 100, b"abc")}
    assert again.under("") == {"a"}
    again.forget("a")
    again.save()
    assert Manifest.load(path, "s3://b/p/").entries == {}


def test_manifest_for_another_url_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    m = Manifest(path, "s3://b/alice/")
    m.record("a", entry(1, 1, b"x"))
    m.save()
    assert Manifest.load(path, "s3://b/bob/").entries == {}


def test_manifest_under() -> None:
    m = Manifest(Path("unused"), "u")
    for rel in ["a", "ab", "a/b", "a/c/d", "b"]:
        m.record(rel, entry(1, 1, b"x"))
    assert m.under("a") == {"a", "a/b", "a/c/d"}
    assert m.under("a/c") == {"a/c/d"}


def test_corrupt_manifest_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("{not json")
    with pytest.raises(BadInput, match="move it away"):
        Manifest.load(path, "u")
    path.write_text(json.dumps({"version": 99, "url": "u", "entries": {"a": [1, 1, "x", "x"]}}))
    assert Manifest.load(path, "u").entries == {}


def s3_etag(data: bytes, part: int) -> str:
    """S3's multipart ETag, computed here independently: the MD5 of the parts' MD5s, '-', their count."""
    parts = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


def test_a_large_file_known_by_its_parts_digest_is_read_in_that_form(tmp_path: Path) -> None:
    mib = 1 << 20
    data = os.urandom(mib) * 20 + b"tail"
    (tmp_path / "big.bin").write_bytes(data)
    read = md5_reader(tmp_path)
    assert read("big.bin") == hashlib.md5(data).hexdigest()
    assert read("big.bin", s3_etag(data, 8 * mib)) == s3_etag(data, 8 * mib)
    # a transfer that had to use bigger parts (huge files: at most 10,000 parts) doubles them: 2 parts of 16 MiB
    assert read("big.bin", "0" * 32 + "-2") == s3_etag(data, 16 * mib)
    assert read("big.bin", "0" * 32 + "-1") == s3_etag(data, 32 * mib)
    assert part_count(len(data)) == 3 and part_count(len(data), most=2) == 2 and part_count(8 * mib) == 1
    assert part_count(10_000 * 8 * mib) == 10_000 and part_count(10_000 * 8 * mib + 1) == 5_001
    assert read("gone.bin", s3_etag(data, 8 * mib)) is None
    etag = s3_etag(data, 8 * mib)
    st = Stat.of((tmp_path / "big.bin").stat())
    known = {"big.bin": Entry(st.size, st.mtime_ns - 1, etag, etag)}  # the stat moved: settled by the digest
    assert set(diff({"big.bin": st}, known, read).touched) == {"big.bin"}
    (tmp_path / "big.bin").write_bytes(data[:-1] + b"!")  # the same size, other bytes
    assert diff({"big.bin": st}, known, read).changed == {"big.bin"}
    assert not PARTS_DIGEST.fullmatch(hashlib.md5(data).hexdigest())


def test_restore_matches_a_local_file_in_the_objects_digest_form_whatever_the_entrys(tmp_path: Path) -> None:
    """A large file known by a parts digest, changed here to exactly the bytes another tool put in one PUT (the
    object has an MD5): in sync, not a conflict."""
    import time

    from vmlab.agent.restore import _decide
    from vmlab.agent.stores import ObjectInfo

    mib = 1 << 20
    old, new = os.urandom(mib) * 9, os.urandom(mib) * 9 + b"!"
    (tmp_path / "big.bin").write_bytes(new)
    st = Stat.of((tmp_path / "big.bin").stat())
    manifest = Manifest(tmp_path / "m.json", "s3://b/p/")
    manifest.record("big.bin", Entry(len(old), 1, s3_etag(old, 8 * mib), s3_etag(old, 8 * mib)))
    obj = ObjectInfo("big.bin", len(new), md5(new), md5(new), time.time())
    assert _decide(tmp_path, "big.bin", obj, st, manifest, changed_here=False) == "in sync"
    assert manifest.entries["big.bin"].md5 == md5(new)
    # and an object in parts form against an entry with the whole file's MD5 (a file the restore downloaded)
    manifest.record("big.bin", Entry(len(old), 1, md5(old), "etag-of-old"))
    parts = ObjectInfo("big.bin", len(new), s3_etag(new, 8 * mib), "", time.time())
    assert _decide(tmp_path, "big.bin", parts, st, manifest, changed_here=False) == "in sync"
