"""The layout of a local chunk directory: one definition for the server's store that writes it
(server/storage/local.py) and for the reader of a client on the same machine (pfs/vfs/local_chunks.py).

Large chunks: ROOT/chunks/ab/abcdef... (hex address), one zstd frame each.
Small chunks: rows of the table `small` in ROOT/chunks.db (SQLite).
A server offers such a directory to its clients as DirectRead(KIND, ROOT); a client reads it only then.
"""

import os
import sqlite3
from collections.abc import Sequence

KIND = "local-dir"
SMALL_DB = "chunks.db"
CREATE_SMALL = "CREATE TABLE IF NOT EXISTS small (address BLOB PRIMARY KEY, data BLOB NOT NULL)"
INSERT_SMALL = "INSERT OR IGNORE INTO small VALUES (?, ?)"
_SELECT_SMALL = "SELECT data FROM small WHERE address = ?"


def chunk_file(root: str | os.PathLike, address: bytes) -> str:
    """Where the large chunk at ADDRESS is (small chunks have none)."""
    name = address.hex()
    return f"{root}/chunks/{name[:2]}/{name}"


def small_db(root: str | os.PathLike) -> str:
    return f"{root}/{SMALL_DB}"


def small_chunk(db: sqlite3.Connection, address: bytes) -> bytes | None:
    """The frame of the small chunk at ADDRESS, or None."""
    row = db.execute(_SELECT_SMALL, (address,)).fetchone()
    return None if row is None else row[0]


def small_present(db: sqlite3.Connection, addresses: Sequence[bytes]) -> set[bytes]:
    """Those of ADDRESSES (a few hundred at most: one statement) that are small chunks."""
    rows = db.execute(f"SELECT address FROM small WHERE address IN ({','.join('?' * len(addresses))})", addresses)
    return {r[0] for r in rows}


def small_heads(db: sqlite3.Connection, addresses: Sequence[bytes], size: int) -> dict[bytes, bytes]:
    """The first SIZE bytes of the frame of each of ADDRESSES (a few hundred at most) that is a small chunk."""
    rows = db.execute(f"SELECT address, substr(data, 1, ?) FROM small WHERE address IN "
                      f"({','.join('?' * len(addresses))})", (size, *addresses))
    return dict(rows.fetchall())
