"""zstd compression of chunks. Safe to call from many threads: each has its own contexts.

zstandard releases the GIL, so compressing on a thread pool uses every core.
Every frame carries its content checksum, which zstd checks when it decompresses.
"""

import threading

import zstandard

LEVEL = 1  # level 3 compresses this data no better and costs twice the time
_local = threading.local()


def compress(data: bytes | memoryview) -> bytes:
    """A zstd frame of DATA, with its size (so decompression needs no guess) and its checksum."""
    ctx = getattr(_local, "compressor", None)
    if ctx is None:
        ctx = _local.compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True)
    return ctx.compress(data)


def decompress(frame: bytes) -> bytes:
    """The plain bytes of a frame made by compress(); raises zstandard.ZstdError if corrupt."""
    ctx = getattr(_local, "decompressor", None)
    if ctx is None:
        ctx = _local.decompressor = zstandard.ZstdDecompressor()
    return ctx.decompress(frame)


def has_checksum(frame: bytes) -> bool:
    """Whether zstd checks FRAME's content when it decompresses it; raises zstandard.ZstdError if not a frame."""
    return zstandard.get_frame_parameters(frame).has_checksum
