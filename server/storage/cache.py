"""A size-bounded cache, on the server's disk, of the objects of a remote store: repeated reads do not go back to
the bucket.

An object (a pack of chunks) is a file ROOT/ab/abcdef... (its name) holding its bytes, written to tmp/ and renamed
into place, unsynced: a crash may lose or tear entries, which is why readers check every chunk they take from one
against the checksum recorded for it, and drop an entry that fails. The least recently used objects go first once
the cache holds more than its bound; the order survives a restart as the files' modification times.
"""

import os
import pathlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence

from pfs.core.memory import write_all


class DiskCache:
    def __init__(self, root: pathlib.Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            leftover.unlink()
        self._sizes: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._lock = threading.Lock()
        found = []
        for entry in root.glob("??/*"):
            try:
                stat = entry.stat()
            except OSError:  # gone meanwhile
                continue
            found.append((stat.st_mtime, entry.name, stat.st_size))
        for _, name, size in sorted(found):
            self._sizes[name] = size
            self._bytes += size
        self._evict()

    def read(self, name: str, ranges: Sequence[tuple[int, int]]) -> list[bytes] | None:
        """The bytes of the object NAME in each (offset, length) of RANGES, or None if it is not cached whole."""
        with self._lock:
            if name not in self._sizes:
                return None
            self._sizes.move_to_end(name)
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            self.drop(name)
            return None
        try:
            parts = [os.pread(fd, length, offset) for offset, length in ranges]
            os.utime(fd)  # its place in the order, after a restart
        finally:
            os.close(fd)
        if any(len(p) != length for p, (_, length) in zip(parts, ranges)):
            self.drop(name)  # torn
            return None
        return parts

    def put(self, name: str, data: bytes | memoryview) -> None:
        """Keeps DATA, the whole object NAME, if it fits."""
        if len(data) > self.max_bytes:
            return
        with self._lock:
            if name in self._sizes:
                self._sizes.move_to_end(name)
                return
        tmp = self._tmp / uuid.uuid4().hex
        final = self._path(name)
        try:
            with open(tmp, "wb") as f:
                write_all(f, data)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:  # the first entry under its fan-out directory
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.replace(tmp, final)
        except OSError:  # a full disk: the cache is only a cache
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            if name not in self._sizes:
                self._sizes[name] = len(data)
                self._bytes += len(data)
        self._evict()

    def drop(self, name: str) -> None:
        """Forgets the object NAME (one whose bytes proved wrong)."""
        with self._lock:
            size = self._sizes.pop(name, None)
            if size is not None:
                self._bytes -= size
        pathlib.Path(self._path(name)).unlink(missing_ok=True)

    def _evict(self) -> None:
        while True:
            with self._lock:
                if self._bytes <= self.max_bytes or not self._sizes:
                    return
                name, size = self._sizes.popitem(last=False)
                self._bytes -= size
            pathlib.Path(self._path(name)).unlink(missing_ok=True)

    def _path(self, name: str) -> str:
        return f"{self.root}/{name[:2]}/{name}"
