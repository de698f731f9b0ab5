"""Giving up on a stream whose server stopped sending: a server that hangs, or a connection that died without a
word, would otherwise keep a reader (a mount's read, a download) waiting for ever; TCP and gRPC notice neither.

Only the time spent waiting for the next message counts: a consumer may take as long as it likes between messages.
"""

import threading
import time
from collections.abc import Iterator

import grpc

from pfs.core.errors import Unavailable


class StallWatch:
    """Cancels each stream it watches once it has waited LIMIT seconds for a message; a thread of its own runs
    while any stream is watched."""

    def __init__(self, limit: float, address: str) -> None:
        self.limit = limit
        self.address = address
        self._waiting: dict[grpc.Call, float | None] = {}  # each watched call: since when it waits, or None
        self._stalled: set[grpc.Call] = set()
        self._lock = threading.Lock()
        self._watching = False

    def messages(self, call) -> Iterator:
        """The messages of the streaming CALL (a response iterator that is a grpc.Call); Unavailable if it stalls."""
        with self._lock:
            self._waiting[call] = None
            if not self._watching:
                self._watching = True
                threading.Thread(target=self._watch, name="pfs-stalls", daemon=True).start()
        try:
            while True:
                self._waiting[call] = time.monotonic()
                try:
                    message = next(call)
                except StopIteration:
                    return
                except grpc.RpcError:
                    if call in self._stalled:
                        raise Unavailable(f"the pfs server at {self.address} sent nothing for {self.limit:g} s "
                                          "(PFS_READ_TIMEOUT); the read was given up") from None
                    raise
                self._waiting[call] = None
                yield message
        finally:
            with self._lock:
                self._waiting.pop(call, None)
                self._stalled.discard(call)
            call.cancel()  # a consumer that stopped early: the server stops too

    def _watch(self) -> None:
        while True:
            time.sleep(min(self.limit / 4, 1.0))
            now = time.monotonic()
            with self._lock:
                if not self._waiting:
                    self._watching = False
                    return
                stalled = [c for c, since in self._waiting.items() if since is not None and now - since > self.limit]
                self._stalled.update(stalled)
            for call in stalled:
                call.cancel()
