"""zstd compression of chunks. Safe to call from many threads: each has its own contexts.

zstandard releases the GIL, so compressing on a thread pool uses every core.
Every frame carries its content checksum, which zstd checks when it decompresses, and its size, which
decompress() checks against a bound before it allocates anything.

A chunk that would not compress (gzip, zip, parquet, JPEG: bytes compressed already) is stored as a frame of raw
blocks, which any zstd decoder reads like any other frame: a small sample of it is compressed first, and only a
chunk whose sample does not shrink is framed raw, at several times the speed zstd would take to find out.
"""

import threading

import xxhash
import zstandard

# By bench/ingest.py's table of levels: 3 compresses text no better than 1 at 1.6 to 2 times the time; -1 to -7
# save a tenth to a third of it but store 15-25% more, which a put pays back in sending and writing
LEVEL = 1
HEADER_BYTES = 18  # a frame header's most: enough of a frame to read its size
# The sample: PROBE_PIECES pieces of PROBE_PIECE bytes spread over the chunk, a hundredth of the time of compressing
# a chunk of text; a chunk is framed raw if its sample compresses to more than RAW_ABOVE of its size (a random
# sample: just over 1). Smaller chunks are compressed as they are.
PROBE_PIECES = 16
PROBE_PIECE = 512
PROBE_MIN = 64 << 10
RAW_ABOVE = 0.97
# A raw frame (RFC 8878): the magic number; a header byte saying one segment, a 4-byte content size and a
# checksum; blocks of at most RAW_BLOCK bytes, each after a 3-byte header (its size, type raw, whether it is the
# last); the low 4 bytes of the content's XXH64.
_RAW_HEADER = b"\x28\xb5\x2f\xfd\xa4"
RAW_BLOCK = 128 << 10
_local = threading.local()


def compress(data: bytes | memoryview) -> bytes:
    """A zstd frame of DATA, with its size (so decompression needs no guess) and its checksum; of raw blocks if
    DATA would not compress."""
    if len(data) >= PROBE_MIN and not _compresses(data):
        return raw_frame(data)
    ctx = getattr(_local, "compressor", None)
    if ctx is None:
        ctx = _local.compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True)
    return ctx.compress(data)


def raw_frame(data: bytes | memoryview) -> bytes:
    """A zstd frame holding DATA (at least a byte, under 4 GiB) as it is, in raw blocks."""
    view = memoryview(data)
    parts = [_RAW_HEADER, len(view).to_bytes(4, "little")]
    for start in range(0, len(view), RAW_BLOCK):
        block = view[start : start + RAW_BLOCK]
        last = start + RAW_BLOCK >= len(view)
        parts += [(len(block) << 3 | last).to_bytes(3, "little"), block]
    parts.append((xxhash.xxh64_intdigest(view) & 0xFFFFFFFF).to_bytes(4, "little"))
    return b"".join(parts)


def _compresses(data: bytes | memoryview) -> bool:
    """Whether a sample of DATA shrinks when compressed."""
    ctx = getattr(_local, "prober", None)
    if ctx is None:
        ctx = _local.prober = zstandard.ZstdCompressor(level=LEVEL, write_content_size=False)
    step = len(data) // PROBE_PIECES
    sample = b"".join(data[i : i + PROBE_PIECE] for i in range(0, PROBE_PIECES * step, step))
    return len(ctx.compress(sample)) <= RAW_ABOVE * len(sample)


class TooLarge(ValueError):
    """A frame that does not say its size, or says more than the caller allows."""


def decompress(frame: bytes, max_size: int) -> bytes:
    """The plain bytes of a frame made by compress(), at most MAX_SIZE of them.

    Raises TooLarge for a frame without its size or above MAX_SIZE (before decompressing it), and
    zstandard.ZstdError if the frame is corrupt or followed by anything (padding, another frame): a chunk stored
    is its frame and nothing more, so no upload can make the store keep, and its readers fetch, more.
    """
    size = content_size(frame)
    if size > max_size:
        raise TooLarge(f"it holds {size} bytes, more than the {max_size} a chunk may hold")
    ctx = getattr(_local, "decompressor", None)
    if ctx is None:
        ctx = _local.decompressor = zstandard.ZstdDecompressor()
    return ctx.decompress(frame, max_output_size=max_size, allow_extra_data=False)  # one frame, nothing after it


def content_size(head: bytes) -> int:
    """The plain size a frame's header (its first HEADER_BYTES, or all of it) says; decompress() gives exactly as
    many. Raises TooLarge if it does not say, zstandard.ZstdError if HEAD is not a frame's."""
    size = zstandard.get_frame_parameters(head).content_size
    if size == zstandard.CONTENTSIZE_UNKNOWN:
        raise TooLarge("it does not say its size")
    return size


def has_checksum(frame: bytes) -> bool:
    """Whether zstd checks FRAME's content when it decompresses it; raises zstandard.ZstdError if not a frame."""
    return zstandard.get_frame_parameters(frame).has_checksum
