"""A bound on the calls that last as long as a client wants: past it, one more is refused, never queued.

The server is grpc's asyncio server: a call that waits for news (subscribe-commit, flush-commit) is a
coroutine holding no thread, and a response stream holds a pool thread only while it makes each message
(server/rpc/blocking.py). Still, each such call holds memory and a gRPC call for as long as it lasts, and a
request stream (put-chunks) holds a thread of its own while its client sends slowly, since the store
consumes it as blocking code. So at most LIMIT of them run at once (--max-streams); one more is answered
RESOURCE_EXHAUSTED at once, in one line, and the server's threads and memory stay bounded whatever clients do.
"""

import contextlib
from collections.abc import AsyncIterator, Callable

import grpc

from server.rpc.handlers import around

WAITING_UNARY = frozenset({"/pps.PPS/FlushCommit"})  # unary calls that wait for news as long as it takes


class StreamLimit(grpc.aio.ServerInterceptor):
    """Lets at most LIMIT streaming (or waiting) calls run at once; one more is RESOURCE_EXHAUSTED."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running = 0  # counted on the event loop's thread alone: no lock
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method
        if method not in self._handlers:
            handler = await continuation(handler_call_details)
            long = handler is not None and (handler.request_streaming or handler.response_streaming
                                            or method in WAITING_UNARY)
            self._handlers[method] = around(handler, self._slot) if long else handler
        return self._handlers[method]

    @contextlib.asynccontextmanager
    async def _slot(self, request, context: grpc.aio.ServicerContext) -> AsyncIterator:
        if self._running >= self.limit:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the server already serves {self.limit} streaming calls (subscribe-commit, "
                                "flush-commit, transfers); call again once some have ended")
        self._running += 1
        try:
            yield request
        finally:  # also when the client went away and grpc cancelled the call
            self._running -= 1
