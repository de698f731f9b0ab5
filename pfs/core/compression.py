"""zstd compression of chunks. Safe to call from many threads: each has its own contexts.

zstandard releases the GIL, so compressing on a thread pool uses every core.
Every frame carries its content checksum, which zstd checks when it decompresses, and its size, which
decompress() checks against a bound before it allocates anything.
"""

import threading

import zstandard

LEVEL = 1  # level 3 compresses this data no better and costs twice the time
HEADER_BYTES = 18  # a frame header's most: enough of a frame to read its size
_local = threading.local()


def compress(data: bytes | memoryview) -> bytes:
    """A zstd frame of DATA, with its size (so decompression needs no guess) and its checksum."""
    ctx = getattr(_local, "compressor", None)
    if ctx is None:
        ctx = _local.compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True)
    return ctx.compress(data)


class TooLarge(ValueError):
    """A frame that does not say its size, or says more than the caller allows."""


def decompress(frame: bytes, max_size: int) -> bytes:
    """The plain bytes of a frame made by compress(), at most MAX_SIZE of them.

    Raises TooLarge for a frame without its size or above MAX_SIZE (before decompressing it), and
    zstandard.ZstdError if the frame is corrupt.
    """
    size = content_size(frame)
    if size > max_size:
        raise TooLarge(f"it holds {size} bytes, more than the {max_size} a chunk may hold")
    ctx = getattr(_local, "decompressor", None)
    if ctx is None:
        ctx = _local.decompressor = zstandard.ZstdDecompressor()
    return ctx.decompress(frame, max_output_size=max_size)


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
