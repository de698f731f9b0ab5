"""Where a local chunk store keeps chunks, shared by the server's store and a mount that reads it directly.

Large chunks: DIR/chunks/ab/abcdef... (hex address), one zstd frame each.
Small chunks: rows of the table `small` in DIR/chunks.db (SQLite).
"""

import os

SMALL_DB = "chunks.db"
SMALL_QUERY = "SELECT data FROM small WHERE address = ?"


def chunk_file(root: str | os.PathLike, address: bytes) -> str:
    name = address.hex()
    return f"{root}/chunks/{name[:2]}/{name}"
