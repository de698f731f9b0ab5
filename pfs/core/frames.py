"""Stored chunks: a zstd frame of plain bytes whose BLAKE3 is the chunk's address.

unpack() is the one check of a chunk against its address, used wherever a
chunk arrives: the server receiving it, the client reading it back, a mount
reading the server's disk.
"""

import zstandard

from pfs.core import compression
from pfs.core.errors import DataLoss
from pfs.core.hashing import address


def unpack(addr: bytes, frame: bytes) -> bytes:
    """The plain bytes of FRAME; raises DataLoss if it is not a zstd frame or does not match ADDR."""
    try:
        plain = compression.decompress(frame)
    except zstandard.ZstdError:
        raise DataLoss(f"chunk {addr.hex()} is not a valid zstd frame") from None
    if address(plain) != addr:
        raise DataLoss(f"chunk {addr.hex()} does not match its address")
    return plain
