"""Chunk and object addresses: BLAKE3 of the plain bytes (collision-resistant, ~4 GB/s)."""

import blake3

ADDRESS_SIZE = 32


def address(data: bytes | memoryview) -> bytes:
    """The 32-byte address of DATA."""
    return blake3.blake3(data).digest()
