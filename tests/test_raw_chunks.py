"""Chunks that would not compress (gzip, zip, JPEG, random bytes) are stored as zstd frames of raw blocks: any zstd
decoder reads them, zstd checks their checksum where they are read, the server checks them against their address,
and their address, of the plain bytes, dedups them with the same bytes stored compressed."""

import gzip
import io
import random

import pytest
import zstandard

from conftest import stored_chunks
from pfs.core import compression, frames
from pfs.core.chunking import Chunker
from pfs.core.errors import DataLoss
from pfs.core.hashing import address
from pfs.core.model import ChunkRef, CommitRef, FileWrite


def csv(n: int, seed: int = 0) -> bytes:
    r = random.Random(seed)
    return b"".join(b"%d,%s,%d.%02d\n" % (i, r.choice([b"Oslo", b"Lima", b"Quito"]), r.randrange(10**6), i % 100)
                    for i in range(n))


def zipped(n: int) -> bytes:
    return gzip.compress(csv(n, 1), compresslevel=6)


@pytest.mark.parametrize("size", [compression.PROBE_MIN, compression.RAW_BLOCK, compression.RAW_BLOCK + 1,
                                  (1 << 20) + 3])
def test_random_bytes_are_framed_raw_and_any_zstd_decoder_reads_them(size):
    data = random.Random(size).randbytes(size)
    frame = compression.compress(data)
    assert frame == compression.raw_frame(data)
    blocks = -(-size // compression.RAW_BLOCK)
    assert len(frame) == size + 9 + 3 * blocks + 4  # header, block headers, checksum: nothing else
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    assert compression.content_size(frame[: compression.HEADER_BYTES]) == size
    assert compression.has_checksum(frame)
    frames.check(address(data), frame)
    assert frames.unpack(ChunkRef(address(data), len(data)), frame) == data


def test_only_what_would_not_compress_is_framed_raw():
    gz = zipped(40_000)
    assert len(gz) > compression.PROBE_MIN
    assert compression.compress(gz) == compression.raw_frame(gz)
    text = csv(20_000)
    half = random.Random(5).randbytes(len(text)) + text  # half of it compresses: worth compressing
    small = random.Random(6).randbytes(compression.PROBE_MIN - 1)  # too small to be worth a sample
    for data in (text, half, small):
        frame = compression.compress(data)
        assert frame != compression.raw_frame(data)
        assert frames.unpack(ChunkRef(address(data), len(data)), frame) == data
    assert len(compression.compress(text)) < len(text) / 2
    assert len(compression.compress(half)) < 0.8 * len(half)


def test_a_rotten_raw_frame_is_data_loss_where_read_and_where_claimed():
    data = random.Random(7).randbytes(300_000)
    frame = compression.raw_frame(data)
    first_block_header = 9
    for at in (first_block_header, first_block_header + 3 + 1000, len(frame) - 4 - 10, len(frame) - 1):
        rotten = bytearray(frame)
        rotten[at] ^= 0x04
        with pytest.raises(DataLoss, match="is corrupt"):
            frames.unpack(ChunkRef(address(data), len(data)), bytes(rotten))
        with pytest.raises(DataLoss, match="is corrupt"):
            frames.check(address(data), bytes(rotten))
    with pytest.raises(DataLoss, match="does not match its address"):
        frames.check(address(data[1:]), frame)


def test_the_server_refuses_a_corrupt_or_padded_chunk(server):
    client = server.client()
    data = random.Random(8).randbytes(200_000)
    rotten = bytearray(compression.raw_frame(data))
    rotten[len(rotten) // 2] ^= 0x01
    other = compression.raw_frame(random.Random(9).randbytes(200_000))
    for frame, error in ((bytes(rotten), "is corrupt"), (other, "does not match its address"),
                         (compression.raw_frame(data) + bytes(1000), "1000 bytes of unused data"),  # padded
                         (compression.compress(data) + compression.compress(b"x"), "bytes of unused data")):
        call = client.put_chunks_async(iter([[(address(data), frame)]]))
        with pytest.raises(DataLoss, match=error):
            try:
                call.result()
            except Exception as err:  # the future raises grpc's error; translate it as the uploader does
                raise client.translate(err) from None
    assert client.missing_chunks([address(data)]) == [address(data)]


def test_raw_chunks_read_back_and_dedup_with_the_same_bytes_stored_compressed(big_server, tmp_path):
    """A gzip file goes in raw and comes back byte for byte; bytes an older client stored as compressed frames
    are not sent again by this one, which would frame them raw, and still read back."""
    from pfs.client.upload import into_commit

    server = big_server
    server.pfs("create-repo", "r")
    gz = zipped(250_000)
    (tmp_path / "data.gz").write_bytes(gz)
    server.pfs("put-file", "r", "master", "data.gz", "-c", "-f", str(tmp_path / "data.gz"))
    client = server.client()
    chunks = client.inspect_file(CommitRef("r", "master"), "data.gz").chunks
    assert len(chunks) >= 2
    stored = stored_chunks(server.data_dir)
    plain = list(Chunker(delimiter="line").split(io.BytesIO(gz)))
    assert [c.address for c in chunks] == [address(p) for p in plain]
    assert all(stored[address(p).hex()] == compression.raw_frame(p) for p in plain)
    assert server.pfs("get-file", "r", "master", "data.gz").stdout == gz

    # what an older client stored: zstd frames of random bytes, which this one would frame raw
    old = random.Random(10).randbytes(3 << 20)
    pieces = list(Chunker(delimiter="line").split(io.BytesIO(old)))
    old_frames = [(address(p), zstandard.ZstdCompressor(level=1, write_checksum=True).compress(p)) for p in pieces]
    client.put_chunks_async(iter([old_frames])).result()
    c = client.start_commit("r")
    client.put_files(CommitRef("r", c.id), [FileWrite("old", tuple(ChunkRef(address(p), len(p)) for p in pieces))])
    with into_commit(client, CommitRef("r", c.id)) as up:
        up.put("new", io.BytesIO(old))
    client.finish_commit(CommitRef("r", c.id))
    assert up.bytes_sent == 0
    stored = stored_chunks(server.data_dir)
    assert all(stored[a.hex()] == f for a, f in old_frames)
    for path in ("old", "new"):
        assert b"".join(client.read_file(CommitRef("r", "master"), path)) == old
