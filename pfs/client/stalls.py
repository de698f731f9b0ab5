"""Giving up on a stream whose server stopped sending: a server that hangs, or a connection that died without a
word, would otherwise keep a reader (a mount's read, a download) waiting for ever; TCP and gRPC notice neither.

Only the time the consumer spends waiting for the next message counts: it may take as long as it likes between
messages. The stream is read on a thread of its own, a message or two ahead, because cancelling a call does not
always wake a thread blocked on it: seen with a server killed under a retried call, where the call, cancelled
every second, stayed blocked for minutes. Given up, that thread is left to gRPC (it ends if the call ever does).
"""

import queue
import threading
from collections.abc import Iterator

import grpc

from pfs.core.errors import Unavailable

AHEAD = 2  # messages read ahead of the consumer: gRPC's flow control still holds a server back from a slow reader
_END = object()


class StallWatch:
    """Messages of streaming calls, given up on once the consumer has waited LIMIT seconds for one."""

    def __init__(self, limit: float, address: str) -> None:
        self.limit = limit
        self.address = address

    def stalled(self, what: str) -> Unavailable:
        """The error of a WHAT (a read, a call) given up on after LIMIT seconds of silence."""
        return Unavailable(f"the pfs server at {self.address} sent nothing for {self.limit:g} s (PFS_READ_TIMEOUT); "
                           f"the {what} was given up")

    def messages(self, call) -> Iterator:
        """The messages of the streaming CALL (a response iterator that is a grpc.Call); its errors as they come
        (grpc.RpcError); Unavailable if it stalls."""
        box: queue.Queue = queue.Queue(AHEAD)
        done = threading.Event()
        threading.Thread(target=_pump, args=(call, box, done), name="pfs-stream", daemon=True).start()
        try:
            while True:
                try:
                    message, error = box.get(timeout=self.limit)
                except queue.Empty:
                    raise self.stalled("read") from None
                if error is not None:
                    raise error
                if message is _END:
                    return
                yield message
        finally:
            done.set()
            call.cancel()  # given up, or a consumer that stopped early: the server stops too


def _pump(call, box: queue.Queue, done: threading.Event) -> None:
    """Puts CALL's messages in BOX, then _END, or the error that ended it; stops once DONE is set."""
    try:
        for message in call:
            if not _put(box, (message, None), done):
                return
        _put(box, (_END, None), done)
    except grpc.RpcError as err:
        _put(box, (None, err), done)


def _put(box: queue.Queue, item: tuple, done: threading.Event) -> bool:
    """Puts ITEM in BOX once there is room; False if DONE was set first (nobody reads BOX any more)."""
    while not done.is_set():
        try:
            box.put(item, timeout=1.0)
            return True
        except queue.Full:
            pass
    return False
