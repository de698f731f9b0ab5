"""Stored chunks: zstd frames of plain bytes whose BLAKE3 is the chunk's address.

Each check where it belongs:
- check() is for where an address is claimed: the server receiving a chunk
  hashes its plain bytes and compares them with the address it came with, so
  nothing is ever stored under a wrong address.
- unpack() is for where a stored chunk is read back (a client, a mount, the
  server's own disk): zstd checks the frame's content checksum (XXH64, written
  by compression.compress) as it decompresses, which catches a corrupt disk or
  transfer at a small part of the cost of hashing with BLAKE3 again.
A frame without a checksum (stored before frames had one) is checked against its address.
"""

import zstandard

from pfs.core import compression
from pfs.core.errors import DataLoss
from pfs.core.hashing import address


def unpack(addr: bytes, frame: bytes) -> bytes:
    """The plain bytes of FRAME; raises DataLoss if it is corrupt."""
    plain = _decompress(addr, frame)
    if not compression.has_checksum(frame):
        _check_address(addr, plain)
    return plain


def check(addr: bytes, frame: bytes) -> None:
    """Raises DataLoss unless FRAME is sound and its plain bytes have the address ADDR."""
    _check_address(addr, _decompress(addr, frame))


def _decompress(addr: bytes, frame: bytes) -> bytes:
    try:
        return compression.decompress(frame)
    except zstandard.ZstdError as err:
        raise DataLoss(f"chunk {addr.hex()} is corrupt ({err})") from None


def _check_address(addr: bytes, plain: bytes) -> None:
    if address(plain) != addr:
        raise DataLoss(f"chunk {addr.hex()} does not match its address")
