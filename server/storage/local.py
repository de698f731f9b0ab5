"""A chunk store in a local directory: chunks/ab/abcdef... (hex address), zstd frames.

Each chunk is written to tmp/, made durable, then renamed into place, so a
crash never leaves a half chunk under its address. Durability is paid per
batch (one syncfs for many chunks), not per chunk, so many small files do
not cost one disk flush each.
"""

import ctypes
import os
import pathlib
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from pfs.core.errors import DataLoss
from server.storage import ChunkStore

BATCH_BYTES = 32 << 20
BATCH_CHUNKS = 2000
_libc = ctypes.CDLL(None, use_errno=True)


class LocalChunkStore(ChunkStore):
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.chunks = root / "chunks"
        self.tmp = root / "tmp"
        self.chunks.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._prefix = f"{self.chunks}/"
        for leftover in self.tmp.iterdir():  # from a crash: never renamed, never visible
            leftover.unlink()

    def path(self, address: bytes) -> str:
        name = address.hex()
        return f"{self._prefix}{name[:2]}/{name}"

    def missing(self, addresses: Iterable[bytes]) -> list[bytes]:
        exists = os.path.exists
        return [a for a in addresses if not exists(self.path(a))]

    def put(self, chunks: Iterable[tuple[bytes, bytes]]) -> int:
        pending: dict[str, pathlib.Path] = {}  # final path -> temp file
        pending_bytes = 0
        flushes = []
        # Each full batch is made durable on another thread while the next one is written.
        with ThreadPoolExecutor(1, thread_name_prefix="chunk-flush") as flusher:
            try:
                for address, data in chunks:
                    final = self.path(address)
                    if final in pending:
                        continue
                    tmp = self.tmp / uuid.uuid4().hex
                    with open(tmp, "wb") as f:
                        f.write(data)
                    pending[final] = tmp
                    pending_bytes += len(data)
                    if pending_bytes >= BATCH_BYTES or len(pending) >= BATCH_CHUNKS:
                        flushes.append(flusher.submit(self._commit, pending))
                        pending, pending_bytes = {}, 0
                flushes.append(flusher.submit(self._commit, pending))
            except BaseException:
                for tmp in pending.values():
                    tmp.unlink(missing_ok=True)
                raise
            return sum(f.result() for f in flushes)

    def _commit(self, pending: dict[str, pathlib.Path]) -> int:
        """Makes the temp files durable, then moves them to their addresses."""
        if not pending:
            return 0
        self._sync()
        for final, tmp in pending.items():
            try:
                os.replace(tmp, final)
            except FileNotFoundError:  # the first chunk under its fan-out directory
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.replace(tmp, final)
        self._sync()  # the renames themselves
        return len(pending)

    def _sync(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _libc.syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(self.root))
        finally:
            os.close(fd)

    def get(self, address: bytes) -> bytes:
        try:
            with open(self.path(address), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise DataLoss(f"chunk {address.hex()} is missing from {self.chunks}") from None
