"""Pure code: path normal form, names, chunking, writing a file in pieces."""

import io
import random
import subprocess
import sys

import pyfastcdc
import pytest

from pfs.core import chunking, memory, names, paths
from pfs.core.chunking import Chunker
from pfs.core.errors import InvalidArgument


@pytest.mark.parametrize(
    "raw,normal",
    [("a/b", "a/b"), ("/a//b/", "a/b"), ("./a/./b", "a/b"), ("", ""), ("/", ""), ("a b/c\\d", "a b/c\\d"),
     (".hidden/.x", ".hidden/.x"), ("a.b/c.", "a.b/c."), ("a/.", "a"), (".", ""), ("./", ""), ("a/", "a")],
)
def test_normalize(raw, normal):
    assert paths.normalize(raw) == normal


@pytest.mark.parametrize("bad", ["..", "a/../b", "/../etc/passwd", "a/..", "a\x00b", "x" * 5000, "x" * 256,
                                 "a/" + "x" * 256, "a\udcffb", "a/" * 300])
def test_normalize_refuses_escapes(bad):
    with pytest.raises(InvalidArgument):
        paths.normalize(bad)


def test_names():
    assert names.check_repo("my-repo_1") == "my-repo_1"
    for bad in ("", "a/b", "a b", "x" * 64, ".."):
        with pytest.raises(InvalidArgument):
            names.check_repo(bad)
    with pytest.raises(InvalidArgument):
        names.check_branch(names.new_commit_id())
    assert names.is_commit_id(names.new_commit_id())


def text(n: int, seed: int = 0) -> bytes:
    r = random.Random(seed)
    return b"".join(b"%d %s\n" % (i, b"w" * r.randint(0, 120)) for i in range(n))


def split(data: bytes, **kw) -> list[bytes]:
    return list(Chunker(**kw).split(io.BytesIO(data)))


@pytest.mark.parametrize("delimiter", ["line", "none"])
@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 100_000, 3_000_000])
def test_chunks_reassemble(delimiter, size):
    data = random.Random(size).randbytes(size)
    chunks = split(data, avg_size=4096, delimiter=delimiter)
    assert b"".join(chunks) == data
    assert all(chunks)


def test_line_delimiter_never_splits_a_line():
    data = text(50_000)
    chunks = split(data, avg_size=4096)
    assert len(chunks) > 100
    assert all(c.endswith(b"\n") for c in chunks)


def test_unterminated_last_line_stays_whole():
    data = text(5000) + b"no newline at the end"
    chunks = split(data, avg_size=4096)
    assert chunks[-1].endswith(b"no newline at the end") and b"\n" in chunks[-1]
    assert all(c.endswith(b"\n") for c in chunks[:-1])


def test_overlong_line_is_cut_at_the_bound():
    chunker = Chunker(avg_size=4096)
    data = b"y" * (chunker.max_size + chunker.max_line + 10_000) + b"\n"
    chunks = list(chunker.split(io.BytesIO(data)))
    assert b"".join(chunks) == data
    assert max(map(len, chunks)) <= chunker.max_size + chunker.max_line


def test_cut_points_are_content_defined():
    """An insertion changes only the chunks near it, and a stream's reads do not matter."""
    data = text(60_000, 1)
    before = split(data, avg_size=4096)
    mid = data.index(b"\n", len(data) // 2) + 1
    after = split(data[:mid] + b"inserted line\n" + data[mid:], avg_size=4096)
    assert len(set(after) - set(before)) <= 3

    class Trickle(io.RawIOBase):  # a pipe that returns a few bytes per read
        def __init__(self, data):
            self.data, self.pos = data, 0

        def readinto(self, b):
            n = min(len(b), 777, len(self.data) - self.pos)
            b[:n] = self.data[self.pos : self.pos + n]
            self.pos += n
            return n

    assert list(Chunker(avg_size=4096).split(Trickle(data))) == before


@pytest.mark.parametrize("delimiter", ["line", "none"])
def test_cuts_do_not_depend_on_how_much_is_read_at_a_time(monkeypatch, delimiter):
    """Reads of any size, however they leave the unread rest in the buffer, cut the same chunks."""
    data = text(20_000, 2) + random.Random(4).randbytes(300_000) + text(20_000, 3)
    whole = split(data, avg_size=4096, delimiter=delimiter)
    assert b"".join(whole) == data
    for read_bytes in (1, 5000, 40_000):
        monkeypatch.setattr(chunking, "READ_BYTES", read_bytes)
        assert split(data, avg_size=4096, delimiter=delimiter) == whole


def test_chunks_are_fastcdcs_cuts_at_every_size():
    """Without a delimiter a stream is cut where FastCDC cuts it whole, a short one (at most the least cut) too."""
    chunker = Chunker(avg_size=4096, delimiter="none")
    for size in (chunker.min_size - 1, chunker.min_size, chunker.min_size + 1, 4 * chunker.max_size):
        data = random.Random(size).randbytes(size)
        cuts = [c.length for c in pyfastcdc.FastCDC(avg_size=4096).cut_buf(data)]
        assert [len(c) for c in chunker.split(io.BytesIO(data))] == cuts
    assert len(cuts) > 4  # the longest is cut, past the least cut and at it


def test_chunker_is_not_reentrant():
    chunker = Chunker(avg_size=4096)
    first = chunker.split(io.BytesIO(text(1000)))
    next(first)
    with pytest.raises(RuntimeError):
        next(chunker.split(io.BytesIO(b"x")))


def test_frames_are_checked_by_checksum_where_read_and_by_address_where_claimed():
    import zstandard

    from pfs.core import compression, frames
    from pfs.core.errors import DataLoss
    from pfs.core.hashing import address
    from pfs.core.model import ChunkRef

    data = random.Random(3).randbytes(50_000)
    addr, frame = address(data), compression.compress(data)
    ref = ChunkRef(addr, len(data))
    assert frames.unpack(ref, frame) == data
    frames.check(addr, frame)
    with pytest.raises(DataLoss, match="does not match its address"):
        frames.check(b"\x00" * 32, frame)
    rotten = bytearray(frame)
    rotten[len(rotten) // 2] ^= 0x10
    with pytest.raises(DataLoss, match="is corrupt"):
        frames.unpack(ref, bytes(rotten))
    with pytest.raises(DataLoss, match="is corrupt"):
        frames.check(addr, bytes(rotten))
    # another chunk's sound frame where REF's should be: its size gives it away
    with pytest.raises(DataLoss, match="holds 49999 bytes, not the 50000 its file lists"):
        frames.unpack(ref, compression.compress(data[1:]))
    # a frame stored before frames carried a checksum is checked against its address
    old = zstandard.ZstdCompressor(level=1).compress(data)
    assert frames.unpack(ref, old) == data
    with pytest.raises(DataLoss, match="does not match its address"):
        frames.unpack(ChunkRef(b"\x00" * 32, len(data)), old)


def test_commit_refs_as_the_cli_takes_them():
    from pfs.core.model import CommitRef

    assert CommitRef.parse("data@master") == CommitRef("data", "master")
    assert CommitRef.parse("data@master^") == CommitRef("data", "master^")
    assert CommitRef.parse("data/master", "/@") == CommitRef("data", "master")  # flush-commit: 1.x's REPO/REF
    assert CommitRef.parse("data@master", "/@") == CommitRef("data", "master")
    assert CommitRef.parse(str(CommitRef("r", "c"))) == CommitRef("r", "c")
    for bad in ("data", "@master", "data@", "data/master"):
        with pytest.raises(InvalidArgument, match="write it as REPO@BRANCH"):
            CommitRef.parse(bad)
    with pytest.raises(InvalidArgument, match="write it as REPO/BRANCH"):
        CommitRef.parse("data", "/@")


class _Written(io.BytesIO):
    """A file that records the size of each write."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write(self, data) -> int:
        self.sizes.append(len(data))
        return super().write(data)


@pytest.mark.parametrize("size", [0, 1, memory.WRITE_PIECE, 3 * memory.WRITE_PIECE + 17])
def test_write_all_writes_every_byte_a_piece_at_a_time(size):
    data = random.Random(size).randbytes(size)
    for given in (data, memoryview(data)):
        f = _Written()
        memory.write_all(f, given)
        assert f.getvalue() == data
        assert all(0 < n <= memory.WRITE_PIECE for n in f.sizes)
        assert len(f.sizes) == -(-size // memory.WRITE_PIECE)


_NEW_REGIONS = """
import sys
from pfs.core.memory import keep_freed_memory
def regions():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)
if sys.argv[1] == "keep":
    keep_freed_memory()
before = regions()
block = bytearray(8 << 20)
print(regions() - before)
"""


@pytest.mark.parametrize("keep, new_regions", [("keep", 0), ("default", 1)])
def test_keep_freed_memory_serves_chunk_sized_blocks_from_the_heap(keep, new_regions):
    # glibc maps a block this large on its own by default; kept, malloc takes it from the heap, which grows in place
    done = subprocess.run([sys.executable, "-c", _NEW_REGIONS, keep], capture_output=True, text=True, check=True)
    assert int(done.stdout) == new_regions
