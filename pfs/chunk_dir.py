"""The layout of a local chunk directory: one definition for the server's store that writes it
(server/storage/local.py) and for the reader of a client on the same machine (pfs/vfs/local_chunks.py).

Large chunks: ROOT/chunks/ab/abcdef... (hex address), one zstd frame each.
Small chunks: rows of the table `small` in ROOT/chunks.db (SQLite), each with the time it was last touched (the
server's garbage collection frees only chunks untouched for a while; a reader needs only address and data).
A server offers such a directory to its clients as DirectRead(KIND, ROOT); a client reads it only then.
"""

import os
import sqlite3

KIND = "local-dir"
SMALL = 64 << 10  # frames below this many bytes are rows of chunks.db; the others are files
SMALL_DB = "chunks.db"
CREATE_SMALL = ("CREATE TABLE IF NOT EXISTS small (address BLOB PRIMARY KEY, data BLOB NOT NULL, "
                "touched REAL NOT NULL DEFAULT 0)")
INSERT_SMALL = "INSERT OR IGNORE INTO small (address, data, touched) VALUES (?, ?, ?)"
QUERY_BATCH = 500  # addresses per SQL IN (...)


def chunk_file(root: str | os.PathLike, address: bytes) -> str:
    """Where the large chunk at ADDRESS is (small chunks have none)."""
    name = address.hex()
    return f"{root}/chunks/{name[:2]}/{name}"


def small_db(root: str | os.PathLike) -> str:
    return f"{root}/{SMALL_DB}"


def small_chunks(db: sqlite3.Connection, addresses: list[bytes]) -> dict[bytes, bytes]:
    """The frames of those of ADDRESSES that are small chunks, by address: one query per QUERY_BATCH."""
    found = {}
    for i in range(0, len(addresses), QUERY_BATCH):
        batch = addresses[i : i + QUERY_BATCH]
        found.update(db.execute(f"SELECT address, data FROM small WHERE address IN ({','.join('?' * len(batch))})",
                                batch))
    return found


def upgrade(db: sqlite3.Connection) -> None:
    """Adds what CREATE_SMALL has and a chunks.db made before it lacks: the column `touched` (0: long ago)."""
    if "touched" not in {row[1] for row in db.execute("PRAGMA table_info(small)")}:
        db.execute("ALTER TABLE small ADD COLUMN touched REAL NOT NULL DEFAULT 0")
