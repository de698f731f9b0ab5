"""Reading chunks straight from a server's data dir, when the mount runs on the server's machine.

The embedded case: the server and the mount share a disk, so a chunk costs a
file read (or a SQLite lookup) and a decompression instead of a gRPC call
and the server's work. Every chunk is checked (frames.check_ref, frames.unpack); one that
is absent or wrong is asked of the server instead.
"""

import os
import sqlite3
import threading

from pfs.core import chunk_layout, frames
from pfs.core.errors import DataLoss
from pfs.core.model import ChunkRef


class LocalChunks:
    def __init__(self, root: str) -> None:
        self.root = root
        self._db = sqlite3.connect(f"file:{root}/{chunk_layout.SMALL_DB}?mode=ro", uri=True,
                                   check_same_thread=False)
        self._lock = threading.Lock()

    @classmethod
    def find(cls, root: str) -> "LocalChunks | None":
        """The server's chunk store at ROOT, if this machine can see it."""
        if not root or not os.path.isfile(os.path.join(root, chunk_layout.SMALL_DB)):
            return None
        try:
            return cls(root)
        except sqlite3.Error:
            return None

    def read(self, ref: ChunkRef) -> bytes | None:
        """The chunk's plain bytes, or None if it is not here (or not right)."""
        try:
            with open(chunk_layout.chunk_file(self.root, ref.address), "rb") as f:
                frame = f.read()
        except FileNotFoundError:
            try:
                with self._lock:
                    row = self._db.execute(chunk_layout.SMALL_QUERY, (ref.address,)).fetchone()
            except sqlite3.Error:
                return None
            if row is None:
                return None
            frame = row[0]
        except OSError:
            return None
        try:
            frames.check_ref(ref)
            return frames.unpack(ref.address, frame)
        except DataLoss:  # fetched from the server instead
            return None

    def close(self) -> None:
        with self._lock:
            self._db.close()
