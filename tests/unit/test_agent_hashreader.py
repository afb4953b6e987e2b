"""HashingReader: the MD5 of a file read once by a store's upload, or None when the reads did not cover it in
order (the caller then hashes the file again)."""

from __future__ import annotations

import hashlib
import io

from vmlab.agent.stores import HashingReader

DATA = bytes(range(256)) * 1000


def test_reads_front_to_back_give_the_whole_md5() -> None:
    reader = HashingReader(io.BytesIO(DATA))
    reader.seek(0, 2)  # a transfer manager measures the size first
    size = reader.tell()
    reader.seek(0)
    while reader.read(7000):
        pass
    assert reader.digest(size) == hashlib.md5(DATA).hexdigest()


def test_a_part_read_again_after_a_seek_back_is_hashed_once() -> None:
    reader = HashingReader(io.BytesIO(DATA))
    reader.read(5000)
    reader.seek(1000)
    reader.read(4000)  # already hashed: not again
    reader.read()
    assert reader.digest(len(DATA)) == hashlib.md5(DATA).hexdigest()


def test_a_skipped_range_or_a_short_read_gives_none() -> None:
    skipped = HashingReader(io.BytesIO(DATA))
    skipped.read(100)
    skipped.seek(200)
    skipped.read()
    assert skipped.digest(len(DATA)) is None
    short = HashingReader(io.BytesIO(DATA))
    short.read(100)
    assert short.digest(len(DATA)) is None
