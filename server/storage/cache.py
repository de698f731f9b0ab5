"""A size-bounded cache of chunks on the server's disk, in front of a remote store: repeated reads do not go back
to the bucket.

A chunk is a file ROOT/ab/abcdef... holding the xxh3-64 of its frame, then the frame. Files are written to tmp/
and renamed into place, unsynced: a cache may lose entries in a crash, and an entry whose bytes do not match its
checksum (torn by one) is dropped, never served. The least recently used entries go first once the cache holds
more than its bound; the order survives a restart as the files' modification times.
"""

import os
import pathlib
import threading
import uuid
from collections import OrderedDict

import xxhash

CHECKSUM = 8  # bytes of xxh3-64 before each frame


class DiskCache:
    def __init__(self, root: pathlib.Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            leftover.unlink()
        self._sizes: OrderedDict[bytes, int] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._lock = threading.Lock()
        found = []
        for entry in root.glob("??/*"):
            try:
                found.append((entry.stat().st_mtime, bytes.fromhex(entry.name), entry.stat().st_size))
            except (OSError, ValueError):  # gone meanwhile, or not a chunk's name
                continue
        for _, address, size in sorted(found):
            self._sizes[address] = size
            self._bytes += size
        self._evict()

    def get(self, address: bytes) -> bytes | None:
        with self._lock:
            if address not in self._sizes:
                return None
            self._sizes.move_to_end(address)
        path = self._path(address)
        try:
            with open(path, "rb") as f:
                data = f.read()
            os.utime(path)  # its place in the order, after a restart
        except FileNotFoundError:
            data = b""
        frame = data[CHECKSUM:]
        if len(data) > CHECKSUM and xxhash.xxh3_64_digest(frame) == data[:CHECKSUM]:
            return frame
        self._drop(address)
        return None

    def put(self, address: bytes, frame: bytes) -> None:
        """Keeps FRAME, the stored bytes of the chunk at ADDRESS (checked by the caller), if it fits."""
        size = len(frame) + CHECKSUM
        if size > self.max_bytes:
            return
        with self._lock:
            if address in self._sizes:
                self._sizes.move_to_end(address)
                return
        tmp = self._tmp / uuid.uuid4().hex
        final = self._path(address)
        try:
            with open(tmp, "wb") as f:
                f.write(xxhash.xxh3_64_digest(frame))
                f.write(frame)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:  # the first entry under its fan-out directory
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.replace(tmp, final)
        except OSError:  # a full disk: the cache is only a cache
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            if address not in self._sizes:
                self._sizes[address] = size
                self._bytes += size
        self._evict()

    def _drop(self, address: bytes) -> None:
        with self._lock:
            size = self._sizes.pop(address, None)
            if size is not None:
                self._bytes -= size
        pathlib.Path(self._path(address)).unlink(missing_ok=True)

    def _evict(self) -> None:
        while True:
            with self._lock:
                if self._bytes <= self.max_bytes or not self._sizes:
                    return
                address, size = self._sizes.popitem(last=False)
                self._bytes -= size
            pathlib.Path(self._path(address)).unlink(missing_ok=True)

    def _path(self, address: bytes) -> str:
        name = address.hex()
        return f"{self.root}/{name[:2]}/{name}"
