"""Stored chunks: zstd frames of plain bytes whose BLAKE3 is the chunk's address.

Each check where it belongs:
- check() is for where an address is claimed: the server receiving a chunk
  hashes its plain bytes and compares them with the address it came with, so
  nothing is ever stored under a wrong address.
- unpack() is for where a stored chunk is read back (a client, a mount, the
  server's own disk): zstd checks the frame's content checksum (XXH64, written
  by compression.compress) as it decompresses, which catches a corrupt disk or
  transfer at a small part of the cost of hashing with BLAKE3 again, and the
  plain size must be the one the file lists for it (another chunk's frame
  under its address is another size, but for one in billions).
A frame without a checksum (stored before frames had one) is checked against its address. A chunk that would
not compress is a frame of raw blocks (compression.raw_frame), checked the same ways.

No frame is decompressed unless its header says it holds at most MAX_CHUNK_SIZE bytes (what
our chunker cuts at most), so no frame, however forged, makes anyone allocate more than that:
the server refuses it as an invalid argument (check), a reader as lost data (unpack).
"""

import zstandard

from pfs.core import compression
from pfs.core.chunking import MAX_CHUNK_SIZE
from pfs.core.errors import DataLoss, InvalidArgument, PfsError
from pfs.core.hashing import ADDRESS_SIZE, address
from pfs.core.model import ChunkRef


def unpack(ref: ChunkRef, frame: bytes) -> bytes:
    """The plain bytes of FRAME, read as REF's chunk; raises DataLoss if it is corrupt, too large, or of another
    size than REF's (another chunk's frame under REF's address: a file copied over another, a restore gone
    wrong; the frame's checksum is of its own bytes)."""
    plain = _decompress(ref.address, frame, DataLoss)
    if len(plain) != ref.size:
        raise DataLoss(f"chunk {ref.address.hex()} holds {len(plain)} bytes, not the {ref.size} its file lists: the "
                       "store has another chunk's bytes under its address")
    if not compression.has_checksum(frame):
        _check_address(ref.address, plain)
    return plain


def check(addr: bytes, frame: bytes) -> None:
    """Raises DataLoss unless FRAME is sound and its plain bytes have the address ADDR; InvalidArgument if too large."""
    _check_address(addr, _decompress(addr, frame, InvalidArgument))


def check_address(addr: bytes) -> bytes:
    """Returns ADDR if it has an address's length; InvalidArgument if not (a client's request)."""
    if len(addr) != ADDRESS_SIZE:
        raise InvalidArgument(f"chunk address {addr[:40].hex()!r} is {len(addr)} bytes long; an address is "
                              f"{ADDRESS_SIZE} (BLAKE3)")
    return addr


def check_claim(ref: ChunkRef) -> None:
    """Raises InvalidArgument unless REF could name a chunk: an address, and a size from 0 to MAX_CHUNK_SIZE.
    Whether the chunk holds that size is the store's to say (server/store.py)."""
    check_address(ref.address)
    if not 0 <= ref.size <= MAX_CHUNK_SIZE:
        raise InvalidArgument(f"chunk {ref.address.hex()} is declared as {ref.size} bytes; a chunk holds 0 to "
                              f"{MAX_CHUNK_SIZE}")


def plain_size(addr: bytes, head: bytes) -> int:
    """The plain size of the stored chunk ADDR, from HEAD, its frame's first compression.HEADER_BYTES (frames are
    stored only once check() passed, so their header says it); DataLoss if HEAD is not a frame's."""
    try:
        return compression.content_size(head)
    except (compression.TooLarge, zstandard.ZstdError) as err:
        raise DataLoss(f"chunk {addr.hex()} is corrupt ({err})") from None


def check_ref(ref: ChunkRef) -> None:
    """Raises DataLoss if REF says its chunk holds more than any chunk may (a reader's check of a file's list)."""
    if ref.size > MAX_CHUNK_SIZE:
        raise DataLoss(f"chunk {ref.address.hex()} is listed as {ref.size} bytes, more than the {MAX_CHUNK_SIZE} "
                       "a chunk may hold")


def _decompress(addr: bytes, frame: bytes, too_large: type[PfsError]) -> bytes:
    try:
        return compression.decompress(frame, MAX_CHUNK_SIZE)
    except compression.TooLarge as err:
        raise too_large(f"chunk {addr.hex()} is refused: {err}") from None
    except zstandard.ZstdError as err:
        raise DataLoss(f"chunk {addr.hex()} is corrupt ({err})") from None


def _check_address(addr: bytes, plain: bytes) -> None:
    if address(plain) != addr:
        raise DataLoss(f"chunk {addr.hex()} does not match its address")
