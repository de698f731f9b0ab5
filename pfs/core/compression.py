"""zstd compression of chunks. Safe to call from many threads: each has its own contexts.

zstandard releases the GIL, so compressing on a thread pool uses every core.
"""

import threading

import zstandard

LEVEL = 1  # level 3 compresses this data no better and costs twice the time
_local = threading.local()


def compress(data: bytes | memoryview) -> bytes:
    """A zstd frame of DATA (with its size, so decompression needs no guess)."""
    ctx = getattr(_local, "compressor", None)
    if ctx is None:
        ctx = _local.compressor = zstandard.ZstdCompressor(level=LEVEL)
    return ctx.compress(data)


def decompress(frame: bytes) -> bytes:
    """The plain bytes of a frame made by compress(); raises zstandard.ZstdError if corrupt."""
    ctx = getattr(_local, "decompressor", None)
    if ctx is None:
        ctx = _local.decompressor = zstandard.ZstdDecompressor()
    return ctx.decompress(frame)
