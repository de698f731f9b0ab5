"""Putting files into an open commit (or a job's output) with few round trips and no byte sent twice.

Files are cut into chunks here; the server is asked which chunks it lacks
(one call per batch), and only those are compressed, on every core, and
streamed in one long call. The files themselves are recorded once their
chunks are stored, up to FILES_PER_CALL in a call, so ten thousand small
files cost a few round trips and one disk flush on the server, not ten
thousand.
"""

import queue
from collections.abc import Callable
from typing import BinaryIO

import grpc

from pfs.client.client import Client
from pfs.core import compression
from pfs.core.chunking import Chunker
from pfs.core.hashing import address
from pfs.core.model import ChunkRef, CommitRef, FileWrite

BATCH_BYTES = 16 << 20  # chunks hashed before one missing-chunks call
GROUP_BYTES = 4 << 20  # chunks compressed by one task and sent in one message
FILES_PER_CALL = 10_000
FLUSH_FILES = 100_000  # files held before they are recorded: bounds memory
IN_FLIGHT = 4  # groups queued for the stream: bounds memory


class Uploader:
    """Puts files, recording them with RECORD (see into_commit). Use as a context manager, or call flush()."""

    def __init__(
        self, client: Client, record: Callable[[list[FileWrite]], None], delimiter: str = "line",
        on_bytes: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.client = client
        self.record = record  # records files whose chunks are stored
        self.chunker = Chunker(client.chunk_avg_size, delimiter)
        self.on_bytes = on_bytes
        self.bytes_sent = 0  # compressed bytes streamed to the server
        self._batch: list[tuple[bytes, bytes]] = []
        self._batch_bytes = 0
        self._writes: list[FileWrite] = []
        self._queue: queue.Queue | None = None
        self._call: grpc.Future | None = None
        self._sent: set[bytes] = set()

    def __enter__(self) -> "Uploader":
        return self

    def __exit__(self, exc_type, *_: object) -> None:
        if exc_type is None:
            self.flush()
        else:
            self._abandon()

    def put(self, path: str, stream: BinaryIO, overwrite: bool = False) -> None:
        """Puts the contents of STREAM at PATH (appending to an existing file unless OVERWRITE)."""
        refs = []
        for data in self.chunker.split(stream):
            addr = address(data)
            refs.append(ChunkRef(addr, len(data)))
            self._batch.append((addr, data))
            self._batch_bytes += len(data)
            self.on_bytes(len(data))
            if self._batch_bytes >= BATCH_BYTES:
                self._send_batch()
        self._writes.append(FileWrite(path, tuple(refs), overwrite))
        if len(self._writes) >= FLUSH_FILES:
            self.flush()

    def flush(self) -> None:
        """Sends everything put so far and records the files."""
        self._send_batch()
        if self._call is not None:
            self._enqueue(None)
            call, self._call, self._queue = self._call, None, None
            self._sent.clear()
            self._result(call)
        for i in range(0, len(self._writes), FILES_PER_CALL):
            self.record(self._writes[i : i + FILES_PER_CALL])
        self._writes.clear()

    def _send_batch(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if not batch:
            return
        wanted = {a for a, _ in batch if a not in self._sent}
        missing = set(self.client.missing_chunks(list(wanted))) if wanted else set()
        group: list[tuple[bytes, bytes]] = []
        group_bytes = 0
        for addr, data in batch:
            if addr in missing and addr not in self._sent:
                self._sent.add(addr)
                group.append((addr, data))
                group_bytes += len(data)
                if group_bytes >= GROUP_BYTES:
                    self._enqueue(self.client.submit(_compressed, group))
                    group, group_bytes = [], 0
        if group:
            self._enqueue(self.client.submit(_compressed, group))

    def _enqueue(self, item) -> None:
        if self._call is None:
            self._queue = queue.Queue(IN_FLIGHT)
            self._call = self.client.put_chunks_async(self._frames(self._queue))
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._call.done():  # the stream failed: surface why
                    self._result(self._call)

    def _frames(self, q: queue.Queue):
        while (item := q.get()) is not None:
            frames = item.result()
            self.bytes_sent += sum(len(f) for _, f in frames)
            yield frames

    def _result(self, call: grpc.Future) -> None:
        try:
            call.result()
        except grpc.RpcError as err:
            raise self.client.translate(err) from None

    def _abandon(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None


def into_commit(client: Client, ref: CommitRef, **options) -> Uploader:
    """An Uploader that puts files into the open commit REF."""
    return Uploader(client, lambda writes: client.put_files(ref, writes), **options)


def _compressed(group: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(addr, compression.compress(data)) for addr, data in group]
